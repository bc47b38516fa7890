"""Commands whose code still lives in ``scripts/`` (being reworked elsewhere at the moment).

A wheel has no ``scripts/`` folder, so setup.py ships that folder inside the package as
``fairseq_crild._scripts``; a source checkout (editable install or the repository root on
``sys.path``) imports ``scripts.<name>`` itself. Once a script's code moves into this package,
its command imports the moved ``main`` directly and this module shrinks.
"""

import importlib
import os
import sys
from types import ModuleType
from typing import Callable, Optional, Sequence

_CHECKOUT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _module(name: str) -> ModuleType:
    saved = list(sys.path)  # the scripts put their parent folder first on sys.path: undo it
    try:
        try:
            return importlib.import_module(f"fairseq_crild._scripts.{name}")
        except ModuleNotFoundError as err:
            if err.name not in ("fairseq_crild._scripts", f"fairseq_crild._scripts.{name}"):
                raise
        if not os.path.isfile(os.path.join(_CHECKOUT, "scripts", f"{name}.py")):
            raise SystemExit(f"fairseq-crild: scripts/{name}.py is neither installed with the "
                             "package nor in a source checkout; reinstall fairseq-crild")
        if _CHECKOUT not in sys.path:
            sys.path.insert(0, _CHECKOUT)
        return importlib.import_module(f"scripts.{name}")
    finally:
        sys.path[:] = saved


def script_main(name: str) -> Callable[[Optional[Sequence[str]]], int]:
    """The ``main(argv)`` of ``scripts/<name>.py``."""

    def main(argv: Optional[Sequence[str]] = None) -> int:
        return _module(name).main(argv)

    main.__doc__ = f"Runs scripts/{name}.py's main(argv)."
    return main
