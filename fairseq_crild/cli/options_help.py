"""The plugin's command-line options, per component, read from the registered dataclasses.

fairseq's ``--help`` lists a task's or criterion's options only when that component is
already chosen on the same command line (``fairseq-train --task distill_glue --criterion
cr_ild --help``), and never lists the components a user-dir adds. This command prints every
option of the plugin's task, criterions, models (with their ``--arch`` presets) and
optimizer, generated from the same dataclasses fairseq parses, so it cannot go stale::

    python -m fairseq_crild.cli.options_help                 # everything
    python -m fairseq_crild.cli.options_help cr_ild kd       # chosen components
    python -m fairseq_crild.cli.options_help --kind criterion --format markdown
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from dataclasses import dataclass
from typing import List, Optional, Sequence

KINDS = ("task", "criterion", "model", "optimizer")
PLUGIN_PACKAGE = "fairseq_crild"


@dataclass(frozen=True)
class Option:
    """One command-line flag as fairseq's parser builds it from a dataclass field."""

    flag: str
    default: str
    choices: Optional[List[str]]
    help: str


@dataclass(frozen=True)
class Component:
    kind: str  # task, criterion, model, optimizer
    name: str  # the registered name (--task NAME, --criterion NAME, ...)
    summary: str  # first line of the class docstring
    options: List[Option]
    architectures: List[str]  # --arch presets of a model, else []


def _registries() -> dict:
    """(kind -> (name -> dataclass, name -> class)), after the plugin registered itself."""
    from fairseq import criterions, models, optim, tasks

    import fairseq_crild  # noqa: F401  (registers the plugin's components)

    return {
        "task": (tasks.TASK_DATACLASS_REGISTRY, tasks.TASK_REGISTRY),
        "criterion": (criterions.CRITERION_DATACLASS_REGISTRY, criterions.CRITERION_REGISTRY),
        "model": (models.MODEL_DATACLASS_REGISTRY, models.MODEL_REGISTRY),
        "optimizer": (optim.OPTIMIZER_DATACLASS_REGISTRY, optim.OPTIMIZER_REGISTRY),
    }


def _options(dataclass_type) -> List[Option]:
    """The flags fairseq's own ``gen_parser_from_dataclass`` makes of ``dataclass_type``."""
    from fairseq.dataclass.utils import gen_parser_from_dataclass

    parser = argparse.ArgumentParser(add_help=False)
    gen_parser_from_dataclass(parser, dataclass_type())
    out = []
    for action in parser._actions:
        flag = action.option_strings[-1] if action.option_strings else action.dest
        if isinstance(action, argparse._StoreTrueAction):
            default = "off"
        elif isinstance(action, argparse._StoreFalseAction):
            default = "on (the flag switches it off)"
        elif action.default == "???":  # omegaconf's MISSING
            default = "required"
        else:
            default = "" if action.default is None else str(action.default)
        choices = [str(c) for c in action.choices] if action.choices else None
        out.append(Option(flag, default, choices, " ".join((action.help or "").split())))
    return out


def _summary(cls) -> str:
    doc = (cls.__doc__ or "").strip()
    return doc.splitlines()[0] if doc else ""


def plugin_components(kinds: Sequence[str] = KINDS,
                      names: Sequence[str] = ()) -> List[Component]:
    """The plugin's registered components of ``kinds`` (all names, or only ``names``),
    in registration-table order; unknown names are refused with the known ones listed."""
    from fairseq.models import ARCH_MODEL_NAME_REGISTRY

    registries = _registries()
    found: List[Component] = []
    for kind in kinds:
        if kind not in registries:
            raise ValueError(f"--kind {kind!r}: choose {', '.join(KINDS)}")
        dataclasses, classes = registries[kind]
        for name, dc in dataclasses.items():
            cls = classes.get(name)
            if cls is None or not cls.__module__.startswith(PLUGIN_PACKAGE):
                continue
            if names and name not in names:
                continue
            archs = sorted(a for a, m in ARCH_MODEL_NAME_REGISTRY.items() if m == name) \
                if kind == "model" else []
            found.append(Component(kind, name, _summary(cls), _options(dc), archs))
    unknown = [n for n in names if n not in {c.name for c in found}]
    if unknown:
        every = [c.name for c in plugin_components(kinds)]
        raise ValueError(f"no plugin component named {', '.join(unknown)}; the plugin "
                         f"registers: {', '.join(every)}")
    return found


def _flag_text(opt: Option) -> str:
    if opt.choices:
        return f"{opt.flag} {{{','.join(opt.choices)}}}"
    return opt.flag


def format_text(components: Sequence[Component], width: int = 100) -> str:
    """Plain text: one block per component, each option with its default and help."""
    lines: List[str] = []
    for comp in components:
        switch = {"task": "--task", "criterion": "--criterion", "model": "--arch",
                  "optimizer": "--optimizer"}[comp.kind]
        lines.append(f"== {comp.kind} {comp.name} ({switch} {comp.name})")
        if comp.summary:
            lines.append(f"   {comp.summary}")
        if comp.architectures:
            lines.append("   --arch presets: " + ", ".join(comp.architectures))
        for opt in comp.options:
            head = f"  {_flag_text(opt)}" + (f"  (default: {opt.default})" if opt.default
                                             else "")
            lines.append(head)
            if opt.help:
                lines.extend(textwrap.wrap(opt.help, width, initial_indent=" " * 6,
                                           subsequent_indent=" " * 6))
        if not comp.options:
            lines.append("  (no options of its own)")
        lines.append("")
    return "\n".join(lines)


def format_markdown(components: Sequence[Component]) -> str:
    """Markdown: a table per component (flag | default | help)."""
    out: List[str] = []
    for comp in components:
        out.append(f"### {comp.kind} `{comp.name}`\n")
        if comp.summary:
            out.append(comp.summary + "\n")
        if comp.architectures:
            out.append("`--arch` presets: " + ", ".join(f"`{a}`" for a in comp.architectures)
                       + "\n")
        out.append("| flag | default | help |\n|---|---|---|")
        for opt in comp.options:
            flag = _flag_text(opt).replace("|", "\\|")
            out.append(f"| `{flag}` | {opt.default.replace('|', '/')} | "
                       f"{opt.help.replace('|', '/')} |")
        out.append("")
    return "\n".join(out)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m fairseq_crild.cli.options_help",
        description="Print the options of fairseq-crild's task, criterions, models and "
                    "optimizer (fairseq's --help does not show a user-dir's components).")
    p.add_argument("names", nargs="*", help="components to show, e.g. distill_glue cr_ild kd "
                   "bert bert_adam (default: all)")
    p.add_argument("--kind", action="append", choices=KINDS,
                   help="only components of this kind (repeatable; default: all kinds)")
    p.add_argument("--format", choices=("text", "markdown"), default="text")
    args = p.parse_args(argv)
    import logging

    logging.getLogger("fairseq").setLevel(logging.WARNING)  # fairseq's import-time notices
    try:
        comps = plugin_components(args.kind or KINDS, args.names)
    except ValueError as err:
        print(f"options_help: error: {err}", file=sys.stderr)
        return 2
    print(format_markdown(comps) if args.format == "markdown" else format_text(comps))
    return 0


if __name__ == "__main__":
    sys.exit(main())
