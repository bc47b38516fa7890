"""README tables that are re-derived from report files, not edited by hand.

A table in a markdown file sits between two marker comments that say where it comes from::

    <!-- crild-summarize out=results/claims task=STS-B setting=few_sample baseline=kd part=table -->
    ...generated table...
    <!-- /crild-summarize -->

``crild-summarize --readme README.md`` rewrites every such block from the reports under its
``out`` folder (relative to the markdown file's folder), so a README figure can never drift
from the committed ``results/``; ``--check`` only reports which blocks are stale.
"""

import os
import re
from dataclasses import dataclass
from typing import Callable, Dict, List, Tuple

from fairseq_crild.pipeline import summary

OPEN = re.compile(r"^<!-- crild-summarize (?P<spec>[^>]*?) -->\s*$")
CLOSE = "<!-- /crild-summarize -->"
KEYS = ("out", "task", "setting", "baseline", "part")


@dataclass(frozen=True)
class BlockSpec:
    """Where one block's table comes from."""

    out: str
    task: str
    setting: str = "full"
    baseline: str = "kd"
    part: str = "table"


def parse_spec(text: str, where: str) -> BlockSpec:
    """``key=value`` pairs of an opening marker; ``where`` (file:line) goes into errors."""
    fields: Dict[str, str] = {}  # the others default as in BlockSpec
    for item in text.split():
        key, sep, value = item.partition("=")
        if not sep or not value:
            raise ValueError(f"{where}: marker item {item!r} is not key=value")
        if key not in KEYS:
            raise ValueError(f"{where}: unknown marker key {key!r} (known: {', '.join(KEYS)})")
        fields[key] = value
    for key in ("out", "task"):
        if key not in fields:
            raise ValueError(f"{where}: marker lacks {key}=... (e.g. out=results/claims "
                             "task=STS-B)")
    spec = BlockSpec(**fields)
    if spec.part not in summary.TABLE_PARTS:
        raise ValueError(f"{where}: part={spec.part} is not one of "
                         f"{', '.join(summary.TABLE_PARTS)}")
    return spec


def find_blocks(lines: List[str], path: str) -> List[Tuple[int, int, BlockSpec]]:
    """(opening line index, closing line index, spec) of every block, in file order."""
    blocks, start, spec = [], None, None
    for i, line in enumerate(lines):
        m = OPEN.match(line)
        if m:
            if start is not None:
                raise ValueError(f"{path}:{i + 1}: a block opens inside the block opened on "
                                 f"line {start + 1}; close that one with {CLOSE}")
            start, spec = i, parse_spec(m.group("spec"), f"{path}:{i + 1}")
        elif line.strip() == CLOSE:
            if start is None:
                raise ValueError(f"{path}:{i + 1}: {CLOSE} without an opening marker")
            blocks.append((start, i, spec))
            start = None
    if start is not None:
        raise ValueError(f"{path}:{start + 1}: block never closed; add a line {CLOSE}")
    return blocks


def default_render(base_dir: str) -> Callable[[BlockSpec], str]:
    """Renders a block from the reports under ``base_dir/spec.out``, one summary per
    (out, task, setting, baseline) however many blocks share it."""
    cache: Dict[Tuple[str, str, str, str], dict] = {}

    def render(spec: BlockSpec) -> str:
        key = (spec.out, spec.task, spec.setting, spec.baseline)
        if key not in cache:
            out = os.path.join(base_dir, spec.out)
            reports = summary.load_reports(out, spec.task, spec.setting)
            cache[key] = summary.summarize(reports, spec.baseline)
        return summary.task_markdown(cache[key], spec.task, spec.part)

    return render


def refresh(text: str, path: str, render: Callable[[BlockSpec], str]
            ) -> Tuple[str, List[BlockSpec]]:
    """``text`` with every block's body replaced by ``render(spec)``, and the specs of the
    blocks whose body changed."""
    lines = text.split("\n")
    blocks = find_blocks(lines, path)
    if not blocks:
        raise ValueError(f"{path}: no <!-- crild-summarize ... --> block to refresh")
    out, changed, pos = [], [], 0
    for start, end, spec in blocks:
        try:
            body = render(spec).split("\n")
        except ValueError as e:
            raise ValueError(f"{path}:{start + 1}: {e}") from None
        if lines[start + 1:end] != body:
            changed.append(spec)
        out += lines[pos:start + 1] + body
        pos = end
    out += lines[pos:]
    return "\n".join(out), changed


def refresh_file(path: str, check: bool = False) -> List[BlockSpec]:
    """Rewrites ``path`` in place (through a temporary file, so an error leaves it as it was)
    unless ``check``; returns the blocks that were, or would be, changed."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    new, changed = refresh(text, path, default_render(os.path.dirname(os.path.abspath(path))))
    if changed and not check:
        tmp = path + ".crild-tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(new)
        os.replace(tmp, path)
    return changed
