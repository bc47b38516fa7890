"""``python -m fairseq_crild``: the user-dir path and the plugin's commands.

    python -m fairseq_crild --user-dir        # the folder to pass to fairseq's --user-dir
    fairseq-train ... --user-dir "$(python -m fairseq_crild --user-dir)"
    python -m fairseq_crild convert HF_DIR OUT  # = crild-convert HF_DIR OUT (every command)
    python -m fairseq_crild                    # lists the commands
"""

import argparse
import importlib
import sys
from typing import Optional, Sequence

from fairseq_crild import __version__
from fairseq_crild.cli.commands import COMMANDS
from fairseq_crild.locations import user_dir


def _listing() -> str:
    width = max(map(len, COMMANDS))
    rows = "\n".join(f"  {name:<{width}}  {what}" for name, (_, what) in COMMANDS.items())
    return (f"commands (installed as console scripts; or python -m fairseq_crild NAME, "
            f"NAME without 'crild-'):\n{rows}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and not argv[0].startswith("-"):
        name = argv[0] if argv[0].startswith("crild-") else f"crild-{argv[0]}"
        if name not in COMMANDS:
            print(f"fairseq_crild: error: no command {argv[0]!r}\n{_listing()}",
                  file=sys.stderr)
            return 2
        module, function = COMMANDS[name][0].split(":")
        sys.argv = [name] + argv[1:]
        return getattr(importlib.import_module(module), function)(argv[1:])
    p = argparse.ArgumentParser(prog="python -m fairseq_crild", epilog=_listing(),
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                description="fairseq-crild: CR-ILD and baseline distillation "
                                "of BERT models as a fairseq --user-dir.")
    p.add_argument("--user-dir", action="store_true",
                   help="print the plugin's folder (absolute) for fairseq's --user-dir and "
                   "hydra's common.user_dir, then exit")
    p.add_argument("--version", action="version", version=f"fairseq-crild {__version__}")
    args = p.parse_args(argv)
    if args.user_dir:
        print(user_dir())
        return 0
    p.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
