"""The whole recipe for one GLUE task and method, ending with a report.

``crild-pipeline`` is the installed command; ``python scripts/run_pipeline.py`` runs the same
``main`` from a source checkout.

    crild-pipeline --task RTE --method cr_ild --glue-dir GLUE --out runs/x \\
        [--seed 1] [--budget cpu|table|paper|smoke] [--setting full|few_sample|label_noise]
        [--base minilm|HF_DIR] [--student-layers 3] [--teacher CKPT]
        [--device auto|cpu|cuda] [--bf16 | --fp16] [--dry-run]

convert the pretrained model -> prepare data -> fine-tune the teacher (or reuse --teacher /
an earlier run's) -> stage 1 ILD (methods pkd, tinybert, minilm, l_ild, cr_ild,
cr_ild_release, bert_emd) -> stage 2 (kd, or glue_ce for 'finetune') -> report.json /
report.md / dev_curve.png. Finished stages are reused; an interrupted stage resumes from its
checkpoint when the command is rerun. Every stage runs on --device (auto: CUDA when this
machine has it, else the CPU) in --bf16 / --fp16 / fp32; each prints its updates done / total
and an ETA as fairseq logs them.
"""

import argparse
import json
import logging
import os
import sys
from typing import Optional

from fairseq_crild.errors import CrildError
from fairseq_crild.pipeline import recipe
from fairseq_crild.pipeline.comparison import run_name
from fairseq_crild.pipeline.dev_analysis import report_metric_names
from fairseq_crild.pipeline.report import (
    count_parameters,
    dev_outputs,
    dev_summary,
    inference_speed,
    last_loss_terms,
    stage_metrics,
    stage_record,
    train_loss_curve,
    train_term_curves,
    write_report,
)
from fairseq_crild.pipeline.runner import ROOT, StageFailed, run_stage


def _arch_args(cfg: dict, layers: int = 0) -> list:
    return ["--arch", "bert", "--encoder-layers", str(layers or cfg["encoder_layers"]),
            "--encoder-embed-dim", str(cfg["encoder_embed_dim"]),
            "--encoder-attention-heads", str(cfg["encoder_attention_heads"]),
            "--encoder-ffn-embed-dim", str(cfg["encoder_ffn_embed_dim"]),
            "--max-position-embeddings", str(cfg["max_position_embeddings"])]


def _base_config(ckpt: str) -> dict:
    from fairseq_crild.models.loading import saved_model_config

    return saved_model_config(ckpt)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", required=True)
    p.add_argument("--method", required=True, choices=sorted(recipe.METHODS))
    p.add_argument("--glue-dir", default=os.environ.get("GLUE_DIR", "../shared/data/glue"))
    p.add_argument("--out", required=True, help="folder for every artefact of the pipeline")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--budget", default="cpu", help="paper | cpu | table | smoke")
    p.add_argument("--setting", default="full", choices=recipe.SETTINGS,
                   help="full GLUE (default), few_sample (1,000 training examples drawn per "
                   "seed; paper teacher 20 epochs) or label_noise (each training label "
                   "flipped with p=0.3; the students distil from the teacher's last "
                   "checkpoint, as the authors)")
    p.add_argument("--base", default="minilm", help="pretrained HF BERT folder or 'minilm'")
    p.add_argument("--student-layers", type=int, default=3)
    p.add_argument("--teacher", default=None, help="reuse this fine-tuned teacher checkpoint")
    p.add_argument("--quiet", action="store_true", help="only stage start/end lines")
    p.add_argument("--device", default="auto", choices=recipe.DEVICES,
                   help="where every stage trains: auto (default: CUDA when this machine has a "
                   "CUDA device, else the CPU), cpu (--cpu) or cuda (one GPU)")
    precision = p.add_mutually_exclusive_group()
    precision.add_argument("--bf16", dest="precision", action="store_const", const="bf16",
                           help="bfloat16 in every stage (CPU or GPU; fp32 master weights)")
    precision.add_argument("--fp16", dest="precision", action="store_const", const="fp16",
                           help="float16 in every stage (CUDA only)")
    p.set_defaults(precision="fp32")
    p.add_argument("--ild-data", default=None, metavar="FOLDER",
                   help="unlabelled sentence pairs for stage 1 (a folder with train.tsv, "
                   "header sentence1<TAB>sentence2, e.g. ../shared/data/supplementary/"
                   "QNLI-pairs): ILD runs on them instead of the task's training set")
    p.add_argument("--ild-data-mode", default="replace", choices=("replace", "concat"),
                   help="stage 1 on --ild-data alone (default, the paper's supplementary "
                   "ILD) or on it and the task's training set")
    p.add_argument("--kd-data", default=None, metavar="FOLDER",
                   help="unlabelled sentence pairs added to the task's training set in "
                   "stage 2, labelled by the teacher (kd only: its hard-label term is off)")
    p.add_argument("--dry-run", action="store_true", help="print each stage's fairseq-train "
                   "arguments as JSON instead of running them (the pretrained model and the "
                   "data are still converted / prepared)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)  # stage logs go to their train.log files
    for name in ("fairseq", "fairseq_crild", "matplotlib"):
        logging.getLogger(name).setLevel(logging.WARNING)
    try:  # an impossible device / precision fails before any conversion
        args.device_flags = recipe.device_args(recipe.resolve_device(args.device),
                                               args.precision)
        report = run(args)
    except (CrildError, ValueError, FileNotFoundError) as err:  # StageFailed, ...
        print(f"run_pipeline: error: {err}", file=sys.stderr)
        return 1
    print(report)
    return 0


def _sh(command: str, *cmd: str) -> None:
    """Runs one of the package's commands (``python -m fairseq_crild.cli.<command>``) in a
    child process, as the stages run; prints its last line."""
    import subprocess

    proc = subprocess.run([sys.executable, "-m", f"fairseq_crild.cli.{command}", *cmd],
                          cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise StageFailed(proc.stderr.strip().splitlines()[-1] if proc.stderr else str(cmd))
    print(proc.stdout.strip().splitlines()[-1])


def _prepare_pairs(folder: Optional[str], out: str, base_dir: str, option: str
                   ) -> Optional[tuple]:
    """Binarises a folder of unlabelled pairs (PAIRS layout) with the base's dictionary once
    (under OUT/data/pairs/NAME); returns (binarised folder, examples) or None."""
    if not folder:
        return None
    if not os.path.isfile(os.path.join(folder, "train.tsv")):
        raise FileNotFoundError(f"{option} {folder}: no train.tsv (header sentence1<TAB>"
                                "sentence2; see ../shared/data/supplementary/README.md)")
    target = os.path.join(out, "data", "pairs", os.path.basename(os.path.normpath(folder)))
    if not os.path.isfile(os.path.join(target, "meta.json")):
        _sh("prepare", "--glue-dir", folder, "--task", "PAIRS", "--dict",
            os.path.join(base_dir, "dict.txt"), "--out", target, "--overwrite")
    with open(os.path.join(target, "meta.json"), encoding="utf-8") as f:
        return target, int(json.load(f)["splits"]["train"])


def run(args) -> str:
    from fairseq_crild.data.glue_tasks import get_task
    from fairseq_crild.outputs import check_not_an_input

    task = get_task(args.task).name
    preset, criterion = recipe.METHODS[args.method]
    if getattr(args, "kd_data", None) and criterion != "kd":
        raise ValueError(f"--kd-data: method {args.method} has no KD stage 2")
    if getattr(args, "ild_data", None) and preset is None:
        raise ValueError(f"--ild-data: method {args.method} has no ILD stage 1")
    # every stage runs in ROOT (the checkout, or site-packages when installed): paths given
    # relative to the current directory are made absolute first
    args.glue_dir = os.path.abspath(args.glue_dir)
    if os.path.exists(args.base):  # else a name such as 'minilm'
        args.base = os.path.abspath(args.base)
    if args.teacher:
        args.teacher = os.path.abspath(args.teacher)
    for option in ("ild_data", "kd_data"):
        if getattr(args, option, None):
            setattr(args, option, os.path.abspath(getattr(args, option)))
    out = os.path.abspath(args.out)
    check_not_an_input(out, {"--glue-dir": args.glue_dir, "--ild-data": args.ild_data,
                             "--kd-data": args.kd_data,
                             "--base": args.base if os.path.exists(args.base) else None})
    for replaced in ("base", os.path.join("data", task)):  # folders rebuilt with --overwrite
        check_not_an_input(os.path.join(out, replaced), {"--teacher": args.teacher},
                           f"--out's {replaced}/")
    base_dir = os.path.join(out, "base")
    if not os.path.isfile(os.path.join(base_dir, "model.pt")):
        _sh("convert", args.base, base_dir, "--overwrite")
    base_ckpt = os.path.join(base_dir, "model.pt")
    data = os.path.join(out, "data", task)
    if not os.path.isfile(os.path.join(data, "meta.json")):
        _sh("prepare", "--glue-dir", args.glue_dir, "--task", task, "--dict",
            os.path.join(base_dir, "dict.txt"), "--out", data, "--overwrite")
    with open(os.path.join(data, "meta.json"), encoding="utf-8") as f:
        meta = json.load(f)
    supplementary = {option: _prepare_pairs(getattr(args, option, None), out, base_dir,
                                            "--" + option.replace("_", "-"))
                     for option in ("ild_data", "kd_data")}
    budget = recipe.budget_for(args.budget, task, args.setting)
    device = getattr(args, "device_flags", None) or recipe.device_args(
        recipe.resolve_device(args.device), args.precision)
    commands: dict = {}

    def stage(name: str, save_dir: str, stage_args: list) -> dict:
        if args.dry_run:
            commands[name] = stage_args + device
            return {"wall_s": 0.0}
        return run_stage(name, save_dir, stage_args + device, args.quiet)

    metric = recipe.selection_metric(task, budget, recipe.metric_for(meta))
    n_train = recipe.setting_train_size(meta["splits"]["train"], args.setting)
    extra = recipe.setting_args(args.setting)  # every stage sees the setting's training set
    base_cfg = _base_config(base_ckpt)
    teacher_arch, student_arch = _arch_args(base_cfg), _arch_args(base_cfg, args.student_layers)
    wall = {}

    # full GLUE: one teacher (seed 1) for every student seed; the other settings draw their
    # training set from --seed, so each seed gets its own teacher on that same set
    teacher_dir, teacher_seed = os.path.join(out, "teachers", f"{task}-{args.budget}"), 1
    if args.setting != "full":
        teacher_dir += f"-{args.setting}-seed{args.seed}"
        teacher_seed = args.seed
    teacher = args.teacher
    if teacher is None:
        rec = stage("teacher", teacher_dir, recipe.teacher_args(
            data, teacher_dir, base_ckpt, teacher_arch, n_train, metric, budget, teacher_seed)
            + extra)
        wall["teacher"] = rec["wall_s"]
        teacher = os.path.join(teacher_dir, recipe.teacher_checkpoint(args.setting))

    args.run_name = run_name(args.method, args.ild_data, args.ild_data_mode, args.kd_data)
    run_dir = os.path.join(out, "runs", task, args.run_name, f"seed{args.seed}")
    if args.setting != "full":
        run_dir = os.path.join(out, "runs", f"{task}-{args.setting}", args.run_name,
                               f"seed{args.seed}")
    init = None
    if preset is not None:
        s1 = os.path.join(run_dir, "stage1")
        n_ild, ild_args = n_train, []
        if supplementary["ild_data"]:
            folder, n_supp = supplementary["ild_data"]
            n_ild = n_supp + (n_train if args.ild_data_mode == "concat" else 0)
            ild_args = ["--ild-data", folder, "--ild-data-mode", args.ild_data_mode]
        wall["stage1"] = stage("stage1", s1, recipe.stage1_args(
            data, s1, preset, teacher, base_ckpt, student_arch, n_ild, budget, args.seed)
            + extra + ild_args)["wall_s"]
        init = os.path.join(s1, "checkpoint_last.pt")
    s2 = os.path.join(run_dir, "stage2")
    n_kd, kd_args = n_train, []
    if supplementary["kd_data"]:
        folder, n_supp = supplementary["kd_data"]
        n_kd = n_train + n_supp
        kd_args = ["--ild-data", folder, "--ild-data-mode", "concat"]
    wall["stage2"] = stage("stage2", s2, recipe.stage2_args(
        data, s2, criterion, teacher, init, base_ckpt, student_arch, n_kd, metric, budget,
        args.seed) + extra + kd_args)["wall_s"]
    if args.dry_run:
        return json.dumps(commands, indent=1)

    return _report(args, task, meta, budget, metric, preset, criterion, data, base_ckpt,
                   teacher, run_dir, init, s2, wall)


def _report(args, task: str, meta: dict, budget, metric: str, preset, criterion: str,
            data: str, base_ckpt: str, teacher: str, run_dir: str, init, s2: str,
            wall: dict) -> str:
    """report.json / report.md / dev_curve.png of a finished run."""
    names = report_metric_names(meta["metrics"], bool(meta.get("regression")),
                                int(meta.get("num_classes", 1)), metric)
    student = stage_metrics(os.path.join(s2, "train.log"), metric, names)
    teacher_dir = os.path.dirname(teacher)
    teacher_log = os.path.join(teacher_dir, "train.log")
    teacher_m = stage_metrics(teacher_log, metric, names)
    student_ckpt = os.path.join(s2, "checkpoint_best.pt")
    s1_log = os.path.join(os.path.dirname(init), "train.log") if init else None
    checkpoints = {"teacher": teacher, "student": student_ckpt}
    stages = {"teacher": stage_record(teacher_dir, teacher, wall.get("teacher"))}
    if init:
        stages["stage1"] = stage_record(os.path.dirname(init), init, wall.get("stage1"))
    stages["stage2"] = stage_record(s2, student_ckpt, wall.get("stage2"))
    dev = dev_summary(dev_outputs(data, checkpoints, budget.max_len), names)
    report = {
        "task": task, "method": getattr(args, "run_name", args.method), "seed": args.seed,
        "budget": args.budget,
        "setting": args.setting,
        "budget_detail": budget.__dict__, "metric": metric, "metric_names": names,
        "teacher_dev": teacher_m["best"], "student_dev": student["best"],
        "teacher_metrics": teacher_m["metrics"], "student_metrics": student["metrics"],
        "teacher_best_num_updates": teacher_m["best_num_updates"],
        "student_best_num_updates": student["best_num_updates"],
        "dev": dev,
        "params": {"teacher": count_parameters(teacher),
                   "student": count_parameters(student_ckpt)},
        "wall_s": wall, "teacher_checkpoint": teacher, "student_checkpoint": student_ckpt,
        "base_checkpoint": base_ckpt, "stages": stages,
        "stage1_loss_terms": last_loss_terms(s1_log) if s1_log else {},
        "inference": inference_speed(data, checkpoints, budget.max_len),
    }
    base = dev["baseline"]
    line = (f"majority class ({base['label']})" if base["kind"] == "majority"
            else f"mean score ({base['label']})", base["metrics"].get(metric))
    panels = [{"title": f"teacher: dev {metric}", "metric": metric,
               "dev": {"teacher": teacher_m["curve"]}, "baseline": line,
               "loss": {"teacher training loss": train_loss_curve(teacher_log)}}]
    if init:
        panels.append({"title": f"stage 1 ({preset}): ILD training loss terms",
                       "metric": metric, "dev": None, "baseline": None,
                       "loss": train_term_curves(s1_log)})
    panels.append({"title": f"stage 2 ({criterion}, {args.method}): dev {metric}",
                   "metric": metric, "dev": {"student": student["curve"]}, "baseline": line,
                   "loss": {"stage 2 training loss": train_loss_curve(os.path.join(
                       s2, "train.log"))}})
    return write_report(run_dir, report, panels)

if __name__ == "__main__":
    sys.exit(main())
