"""Mean and std over seeds of the pipeline's report.json files, as a markdown table.

``crild-summarize`` is the installed command; ``python scripts/summarize_reports.py`` runs the same
``main`` from a source checkout.

    crild-summarize runs/table [--task RTE]
"""

import argparse
import glob
import json
import os
import statistics
import sys
from collections import defaultdict


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", help="the --out folder of run_pipeline.py")
    p.add_argument("--task", default="*")
    args = p.parse_args(argv)
    reports = [json.load(open(f)) for f in sorted(glob.glob(
        os.path.join(args.out, "runs", args.task, "*", "seed*", "report.json")))]
    if not reports:
        print(f"no report.json under {args.out}/runs", file=sys.stderr)
        return 1
    groups = defaultdict(list)
    for r in reports:
        groups[(r["task"], r["method"])].append(r)
    print("| task | method | seeds | dev " + reports[0]["metric"] + " mean | std | per seed |"
          " teacher | wall s (mean) |")
    print("|---|---|---|---|---|---|---|---|")
    for (task, method), rs in sorted(groups.items()):
        scores = [r["student_dev"] for r in sorted(rs, key=lambda r: r["seed"])]
        std = statistics.stdev(scores) if len(scores) > 1 else 0.0
        wall = statistics.mean(sum(v for k, v in r["wall_s"].items() if k != "teacher")
                               for r in rs)
        print(f"| {task} | {method} | {len(rs)} | {statistics.mean(scores):.2f} | {std:.2f} | "
              f"{', '.join(f'{s:.2f}' for s in scores)} | {rs[0]['teacher_dev']:.2f} | "
              f"{wall:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
