"""Supplementary ILD text built from other GLUE tasks: their sentence pairs, or their single
sentences (for a single-sentence task such as CoLA), in the PAIRS layout that
``--ild-data`` / ``--kd-data`` read (``train.tsv``, header ``sentence1`` [``sentence2``]).

Why a builder: ILD needs no labels, so the paper runs stage 1 on other text than the task's
own training set; any GLUE split's text qualifies (test splits too: no label is read). Rows
are de-duplicated (first occurrence kept) so a pair that two tasks share is not weighted
twice. The target task's own splits are refused: its dev text would leak into training.
"""

from typing import Iterable, List, Sequence, Tuple

from fairseq_crild.data.glue_tasks import GlueFormatError, get_task, read_split

Row = Tuple[str, ...]  # (sentence1,) or (sentence1, sentence2)


def supplementary_rows(glue_dir: str, sources: Sequence[Tuple[str, str]], single: bool,
                       target: str = "") -> List[Row]:
    """The text of ``sources`` ((task, split) pairs) as rows: each example's pair, or with
    ``single`` each of its sentences on its own; exact duplicates dropped, in source order.
    A single-sentence source under ``single=False`` is an error (it has no pairs)."""
    target_name = get_task(target).name if target else ""
    rows: List[Row] = []
    seen = set()
    for task_name, split in sources:
        task = get_task(task_name)
        if task.name == target_name:
            raise ValueError(f"--from {task_name}:{split}: that is the target task "
                             f"{target_name}; its text would leak into its own training")
        if not single and not task.is_pair:
            raise ValueError(f"--from {task_name}:{split}: {task.name} has single sentences; "
                             "pass --single for a single-sentence supplementary set")
        for example in read_split(glue_dir, task, split):
            for row in _rows_of(example.text_a, example.text_b, single):
                if row not in seen:
                    seen.add(row)
                    rows.append(row)
    return rows


def _rows_of(text_a: str, text_b, single: bool) -> Iterable[Row]:
    if not single:
        return [(text_a, text_b)]
    return [(text,) for text in (text_a, text_b) if text]


def parse_sources(spec: str) -> List[Tuple[str, str]]:
    """``RTE,STS-B:test`` -> [("RTE", "train"), ("STS-B", "test")] (train when no split)."""
    sources = []
    for item in filter(None, (s.strip() for s in spec.split(","))):
        task, _, split = item.partition(":")
        split = split or "train"
        if split not in get_task(task).splits:
            raise ValueError(f"--from {item}: {get_task(task).name} has splits "
                             f"{', '.join(get_task(task).splits)}")
        sources.append((task, split))
    if not sources:
        raise ValueError("--from: name at least one GLUE task, e.g. RTE or STS-B:test")
    return sources


def tsv_text(rows: Sequence[Row]) -> str:
    """The PAIRS file: the header of the rows' width, one row per line. A sentence holding
    a tab or a line break would shift or split its row, so it is refused (the GLUE reader
    never yields one)."""
    width = len(rows[0]) if rows else 2
    header = ("sentence1", "sentence2")[:width]
    lines = ["\t".join(header)]
    for row in rows:
        if any(ch in text for text in row for ch in "\t\n\r"):
            raise GlueFormatError(f"a sentence holds a tab or line break: {row[0][:40]!r}")
        lines.append("\t".join(row))
    return "\n".join(lines) + "\n"
