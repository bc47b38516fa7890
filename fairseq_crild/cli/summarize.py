"""Method comparison over seeds from the pipeline's report.json files, as markdown tables.

``crild-summarize`` is the installed command; ``python scripts/summarize_reports.py`` runs the same
``main`` from a source checkout. The statistics live in :mod:`fairseq_crild.pipeline.summary`.

    crild-summarize runs/table [--task RTE] [--setting full] [--baseline kd]
        [--json summary.json] [--plots figures/] [--ild-curves figures/]
        [--collect results/]
    crild-summarize --readme README.md [--check]

Per task and method: mean ± sample std over seeds, the per-seed scores, the ratio to the
teacher, the student's wall time, and the difference to the baseline paired by seed with a
paired t interval and a percentile bootstrap interval (both over seeds only). ``--readme``
rewrites the marked tables of a markdown file from their report folders (see
:mod:`fairseq_crild.pipeline.readme_blocks`); with OUT it runs after OUT's summary, so
``--collect results/claims --readme README.md`` copies new reports and refreshes the README.
"""

import argparse
import os
import sys
from typing import List, Optional

from fairseq_crild.pipeline import summary

PROG = "crild-summarize"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("out", nargs="?",
                   help="the --out folder of crild-pipeline (holds runs/); optional with --readme")
    p.add_argument("--task", default="*", help="task name or glob (default: every task)")
    p.add_argument("--setting", default="full",
                   help="full, few_sample or label_noise (runs/TASK-SETTING/); default full")
    p.add_argument("--baseline", default="kd", help="method the others are compared with")
    p.add_argument("--confidence", type=float, default=0.95,
                   help="coverage of both intervals (default 0.95)")
    p.add_argument("--json", metavar="PATH", help="also write the summary as JSON")
    p.add_argument("--plots", metavar="DIR", help="also write one PNG per task into DIR")
    p.add_argument("--ild-curves", metavar="DIR",
                   help="also write each task's stage-1 ILD loss on training and dev inputs "
                   "(runs made with --ild-probe-every) as DIR/ild_curves-TASK.json and .png")
    p.add_argument("--collect", metavar="DIR",
                   help="first copy the selected report.json files to the same paths under "
                   "DIR (no checkpoints or logs; stage 1's ILD curves go into the report), so "
                   "crild-summarize DIR re-derives the figures; a differing copy is refused")
    p.add_argument("--readme", metavar="PATH",
                   help="rewrite every <!-- crild-summarize out=... task=... --> block of this "
                   "markdown file from the reports under its out= folder (relative to PATH)")
    p.add_argument("--check", action="store_true",
                   help="with --readme: change nothing, list the stale blocks, exit 1 if any")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.out is None and args.readme is None:
        parser.error("give the --out folder of crild-pipeline, or --readme PATH")
    if args.check and args.readme is None:
        parser.error("--check needs --readme PATH")
    try:
        if args.out is not None:
            _summarize(args)
        if args.readme is not None:
            return _refresh_readme(args.readme, args.check)
    except (ValueError, OSError) as e:
        print(f"{PROG}: error: " + str(e).replace("\n", " "), file=sys.stderr)
        return 1
    return 0


def _summarize(args: argparse.Namespace) -> None:
    reports = summary.load_reports(args.out, args.task, args.setting)
    if args.collect:
        from fairseq_crild.pipeline.collect import collect_reports

        written = collect_reports(reports, args.out, args.collect)
        print(f"collected {len(written)} new report(s) into {args.collect} "
              f"({len(reports) - len(written)} already there)", file=sys.stderr)
    result = summary.summarize(reports, args.baseline, args.confidence)
    print(summary.to_markdown(result), end="")
    if args.json:
        summary.write_json(result, args.json)
        print(f"wrote {args.json}", file=sys.stderr)
    if args.plots:
        for path in summary.plot(result, args.plots):
            print(f"wrote {path}", file=sys.stderr)
    if args.ild_curves:
        for path in _write_ild_curves(reports, args.setting, args.ild_curves):
            print(f"wrote {path}", file=sys.stderr)


def _refresh_readme(path: str, check: bool) -> int:
    from fairseq_crild.pipeline.readme_blocks import refresh_file

    changed = refresh_file(path, check)
    for spec in changed:
        print(f"{path}: {'stale' if check else 'rewrote'} {spec.part} of {spec.task} "
              f"({spec.setting}, vs {spec.baseline}) from {spec.out}", file=sys.stderr)
    if not changed:
        print(f"{path}: every crild-summarize block is up to date", file=sys.stderr)
    return 1 if check and changed else 0


def _write_ild_curves(reports: List[dict], setting: str, out_dir: str) -> List[str]:
    from fairseq_crild.pipeline import ild_curves
    from fairseq_crild.pipeline.comparison import task_folder

    paths = []
    for task in sorted({r["task"] for r in reports}):
        mine = [r for r in reports if r["task"] == task]
        result = ild_curves.summarize_curves(ild_curves.load_run_curves(mine), mine)
        if not result["methods"]:
            continue
        stem = os.path.join(out_dir, f"ild_curves-{task_folder(task, setting)}")
        os.makedirs(out_dir, exist_ok=True)
        ild_curves.write_json(result, stem + ".json")
        title = f"{task}{'' if setting == 'full' else ' ' + setting}: stage-1 ILD loss"
        paths += [stem + ".json", ild_curves.plot(result, stem + ".png", title)]
    if not paths:
        raise ValueError("no run has stage-1 probes: run the pipeline (or crild-compare) "
                         "with --ild-probe-every N")
    return paths


if __name__ == "__main__":
    sys.exit(main())
