"""Runs the pipeline for methods x seeds of one task against one teacher, N runs at a time.

    crild-compare --task STS-B --out runs/table --budget table --bf16 --jobs 2

The first run goes alone: it converts the base model, binarises the task and (unless
``--teacher`` names one) trains the teacher, which every run then shares; then
the remaining runs go ``--jobs`` at a time, each with ``--threads`` torch threads (two runs of
two threads on two cores oversubscribe and each runs several times slower). Runs that have a
report.json are skipped, so rerunning continues a comparison cut short. Each run logs to
OUT/logs/; after each run the table is rewritten (OUT/summary-TASK.md / .json).

In the paper's harder settings (``--setting few_sample|label_noise``) every seed draws its own
training set, so each seed has its own teacher: the seed's first run trains it alone, then the
seed's other runs share it (tables in OUT/summary-TASK-SETTING.*).
"""

import argparse
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import List, Optional

from fairseq_crild.pipeline import comparison, recipe


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", required=True)
    p.add_argument("--out", required=True, help="the pipelines' shared --out folder")
    p.add_argument("--methods", default=",".join(comparison.COMPARED))
    p.add_argument("--seeds", default="1,2,3,4,5")
    p.add_argument("--budget", default="table", help="paper | cpu | table | smoke")
    p.add_argument("--teacher", default=None, help="a fine-tuned teacher checkpoint to reuse")
    p.add_argument("--glue-dir", default=os.environ.get("GLUE_DIR", "../shared/data/glue"))
    p.add_argument("--base", default="minilm")
    p.add_argument("--student-layers", type=int, default=3)
    p.add_argument("--jobs", type=int, default=2, help="runs at a time")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run")
    p.add_argument("--bf16", action="store_true", help="bfloat16 in every stage")
    p.add_argument("--dropout-impl", default="torch", choices=recipe.DROPOUT_IMPLS,
                   help="the pipeline's --dropout-impl (give hash runs their own --out)")
    p.add_argument("--relation-kl-impl", default="torch", choices=recipe.RELATION_KL_IMPLS,
                   help="the pipeline's --relation-kl-impl (give cpp runs their own --out)")
    p.add_argument("--device", default="cpu", choices=recipe.DEVICES)
    p.add_argument("--ild-data", default=None, help="the pipeline's --ild-data (stage 1)")
    p.add_argument("--ild-data-mode", default="replace", choices=("replace", "concat"))
    p.add_argument("--kd-data", default=None, help="the pipeline's --kd-data (stage 2)")
    p.add_argument("--setting", default="full", choices=recipe.SETTINGS,
                   help="the pipeline's --setting: full GLUE, or the paper's few_sample / "
                   "label_noise sets, each seed with its own teacher (trained by that seed's "
                   "first run)")
    p.add_argument("--ild-probe-every", type=int, default=0,
                   help="the pipeline's --ild-probe-every: stage 1 logs its ILD loss on dev "
                   "and on a training sample every N updates (the overfitting curves)")
    p.add_argument("--stage1-updates", type=int, default=0,
                   help="the pipeline's --stage1-updates (ILD methods only)")
    p.add_argument("--stage2-epochs", type=int, default=0,
                   help="the pipeline's --stage2-epochs")
    p.add_argument("--keep-checkpoints", action="store_true",
                   help="keep every checkpoint (default: a finished run keeps only stage 2's "
                   "best, ~200 MB instead of ~800 MB for a 3-layer MiniLM student)")
    args = p.parse_args(argv)
    try:
        methods = comparison.parse_methods(args.methods)
        seeds = comparison.parse_seeds(args.seeds)
        if args.jobs < 1 or args.threads < 1:
            raise ValueError("--jobs and --threads must be at least 1")
        if args.teacher and comparison.per_seed_teachers(args.setting):
            raise ValueError(f"--teacher with --setting {args.setting}: each seed trains its "
                             "own teacher on its own data; drop --teacher")
        if min(args.ild_probe_every, args.stage1_updates, args.stage2_epochs) < 0:
            raise ValueError("--ild-probe-every, --stage1-updates and --stage2-epochs must "
                             "be 0 (off / the budget's) or positive")
        recipe.budget_for(args.budget, args.task)  # an unknown budget fails before any run
        return _run(args, methods, seeds)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        print(f"crild-compare: error: {err}", file=sys.stderr)
        return 1


def _pipeline_cmd(args, run: comparison.PlannedRun, teacher: Optional[str]) -> List[str]:
    cmd = [sys.executable, "-m", "fairseq_crild.cli.pipeline", "--task", run.task,
           "--method", run.method, "--seed", str(run.seed), "--budget", args.budget,
           "--glue-dir", os.path.abspath(args.glue_dir), "--out", os.path.abspath(args.out),
           "--base", args.base, "--student-layers", str(args.student_layers),
           "--device", args.device, "--quiet"]
    if args.setting != "full":
        cmd += ["--setting", args.setting]
    if args.ild_probe_every and recipe.METHODS[run.method][0] is not None:
        cmd += ["--ild-probe-every", str(args.ild_probe_every)]
    if teacher:
        cmd += ["--teacher", teacher]
    if args.bf16:
        cmd.append("--bf16")
    dropout_impl = getattr(args, "dropout_impl", "torch")
    if dropout_impl != "torch":
        cmd += ["--dropout-impl", dropout_impl]
    relation_kl_impl = getattr(args, "relation_kl_impl", "torch")
    if relation_kl_impl != "torch":
        cmd += ["--relation-kl-impl", relation_kl_impl]
    if args.ild_data and recipe.METHODS[run.method][0] is not None:
        cmd += ["--ild-data", os.path.abspath(args.ild_data), "--ild-data-mode",
                args.ild_data_mode]
    if args.kd_data and recipe.METHODS[run.method][1] == "kd":
        cmd += ["--kd-data", os.path.abspath(args.kd_data)]
    if args.stage1_updates and recipe.METHODS[run.method][0] is not None:
        cmd += ["--stage1-updates", str(args.stage1_updates)]
    if args.stage2_epochs:
        cmd += ["--stage2-epochs", str(args.stage2_epochs)]
    return cmd


def _execute(args, run: comparison.PlannedRun, teacher: Optional[str]) -> float:
    """One pipeline run in a child process, ``--threads`` threads; returns its wall time."""
    logs = os.path.join(args.out, "logs")
    os.makedirs(logs, exist_ok=True)
    log_path = os.path.join(logs, f"{comparison.task_folder(run.task, run.setting)}-"
                                  f"{run.name or run.method}-seed{run.seed}.log")
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads),
               MKL_NUM_THREADS=str(args.threads))
    start = time.time()
    with open(log_path, "a", encoding="utf-8") as log:
        rc = subprocess.call(_pipeline_cmd(args, run, teacher), stdout=log,
                             stderr=subprocess.STDOUT, env=env)
    if rc != 0:
        raise RuntimeError(f"{run.method} seed {run.seed} failed (exit {rc}); see {log_path}")
    if not args.keep_checkpoints:
        for path in comparison.prunable_checkpoints(run.run_dir(args.out)):
            os.remove(path)
    return time.time() - start


def _run_name(args, method: str) -> str:
    """The name the pipeline gives this method's run (supplementary data only where the
    method has the stage that reads it, as :func:`_pipeline_cmd` passes it)."""
    preset, criterion = recipe.METHODS[method]
    return comparison.run_name(method, args.ild_data if preset is not None else None,
                               args.ild_data_mode,
                               args.kd_data if criterion == "kd" else None,
                               args.stage2_epochs,
                               args.stage1_updates if preset is not None else 0)


def _teacher_of(args, run: comparison.PlannedRun) -> str:
    """The teacher the pipeline trains for this run (its group's first run trains it)."""
    return os.path.join(comparison.teacher_dir(os.path.abspath(args.out), run.task, args.budget,
                                               run.setting, run.seed),
                        recipe.teacher_checkpoint(run.setting))


def _write_summary(args, task: str) -> None:
    from fairseq_crild.pipeline import summary

    try:
        table = summary.summarize(summary.load_reports(args.out, task, args.setting))
    except ValueError as err:  # e.g. no finished run yet
        print(f"crild-compare: no table yet ({err})", flush=True)
        return
    stem = os.path.join(args.out, f"summary-{comparison.task_folder(task, args.setting)}")
    with open(stem + ".md.tmp", "w", encoding="utf-8") as f:
        f.write(summary.to_markdown(table))
    os.replace(stem + ".md.tmp", stem + ".md")
    summary.write_json(table, stem + ".json")


def _run(args, methods: List[str], seeds: List[int]) -> int:
    from fairseq_crild.data.glue_tasks import get_task

    task = get_task(args.task).name
    todo = comparison.plan(task, methods, seeds, args.out, lambda method: _run_name(args, method),
                           args.setting)
    print(f"crild-compare: {len(todo)} of {len(methods) * len(seeds)} runs left", flush=True)
    given = os.path.abspath(args.teacher) if args.teacher else None
    failed = []

    def one(run: comparison.PlannedRun, teacher: str) -> None:
        try:
            wall = _execute(args, run, teacher)
            print(f"done {run.method} seed {run.seed} ({wall:.0f} s)", flush=True)
        except RuntimeError as err:
            failed.append(str(err))
            print(f"FAILED {err}", flush=True)
        _write_summary(args, task)

    for group in comparison.teacher_groups(todo):
        teacher = given or _teacher_of(args, group[0])
        shared = [teacher, os.path.join(args.out, "base", "model.pt"),
                  os.path.join(args.out, "data", task, "meta.json")]
        if not all(os.path.isfile(path) for path in shared):
            # the group's first run converts the base, binarises the task and trains the
            # teacher alone: the others then share them instead of racing to write them
            first = group.pop(0)
            wall = _execute(args, first, given)
            print(f"done {first.method} seed {first.seed} ({wall:.0f} s, with the shared "
                  "setup)", flush=True)
            _write_summary(args, task)
        if not os.path.isfile(teacher):
            raise FileNotFoundError(f"no teacher at {teacher}")
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            list(pool.map(lambda run: one(run, teacher), group))
    if failed:
        raise RuntimeError(f"{len(failed)} run(s) failed: " + "; ".join(failed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
