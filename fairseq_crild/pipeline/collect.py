"""Copy finished runs' report.json files into a results folder that a repository can keep.

Run folders hold checkpoints and logs (hundreds of MB) and live under git-ignored ``runs/``;
the tables, plots and ILD curves only need the report files. Collecting them under the same
relative path (``runs/TASK[-SETTING]/METHOD/seedN/report.json``) lets ``crild-summarize``
re-derive every figure from the results folder alone. Reports written before the pipeline
kept stage 1's ILD curves get them from the stage-1 log next to them, parsed by the same
function, so nothing the curves need is lost with ``runs/``.
"""

import json
import os
from typing import Any, Dict, List, Sequence

from fairseq_crild.outputs import OutputExistsError, atomic_output_file
from fairseq_crild.pipeline.ild_curves import REPORT_FIELD, stage1_curves


def collectable(report: Dict[str, Any]) -> Dict[str, Any]:
    """The report as it is kept: without the loader's ``_file``, and with stage 1's ILD
    curves from the log next to it where the report predates that field."""
    kept = {k: v for k, v in report.items() if k != "_file"}
    if REPORT_FIELD not in kept:
        log = os.path.join(os.path.dirname(report["_file"]), "stage1", "train.log")
        kept[REPORT_FIELD] = stage1_curves(log)
    return kept


def collect_reports(reports: Sequence[Dict[str, Any]], source: str, dest: str) -> List[str]:
    """Writes each report (``summary.load_reports`` of ``source``) to the same relative path
    under ``dest``; returns the paths written. A file already there with the same content is
    left alone; one that differs is refused (the run was redone: remove the old copy first),
    so collecting never replaces a result that a README figure may come from."""
    jobs = []
    for r in reports:
        rel = os.path.relpath(r["_file"], source)
        if rel.startswith(os.pardir):
            raise ValueError(f"{r['_file']} is not under {source}")
        text = json.dumps(collectable(r), indent=2)
        path = os.path.join(dest, rel)
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                if f.read() == text:
                    continue
            raise OutputExistsError(
                f"{path} already exists and differs from {r['_file']}; remove it to collect "
                "the new run (its figures change with it)")
        jobs.append((path, text))
    written = []
    for path, text in jobs:  # every clash is found before anything is written
        with atomic_output_file(path) as tmp:
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(text)
        written.append(path)
    return written
