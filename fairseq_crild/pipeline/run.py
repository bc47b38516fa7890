"""The pipeline's run: convert the pretrained model -> prepare the data -> fine-tune the
teacher -> stage 1 ILD -> stage 2 -> report, for one GLUE task, method and seed.

:func:`run` takes the parsed options of ``crild-pipeline`` (:mod:`fairseq_crild.cli.pipeline`
parses them). Conversion and preparation are the package's functions
(:func:`fairseq_crild.models.convert.convert_to_folder`,
:func:`fairseq_crild.data.binarize.prepare_task`) called in this process, each done once per
``--out`` (a folder that is complete is reused); the training stages are ``fairseq-train``
processes (:func:`fairseq_crild.pipeline.runner.run_stage`).
"""

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import warnings
from typing import Iterator, Optional

from fairseq_crild.data.meta import GlueMeta
from fairseq_crild.errors import CrildError
from fairseq_crild.pipeline import recipe
from fairseq_crild.pipeline.comparison import (
    per_seed_teachers,
    run_name,
    task_folder,
)
from fairseq_crild.pipeline.comparison import teacher_dir as teacher_dir_of
from fairseq_crild.pipeline.dev_analysis import report_metric_names
from fairseq_crild.pipeline.ild_curves import REPORT_FIELD, stage1_curves
from fairseq_crild.pipeline.report import (
    count_parameters,
    dev_outputs,
    dev_summary,
    distilled_teacher_dev,
    inference_speed,
    last_loss_terms,
    stage_metrics,
    stage_record,
    train_loss_curve,
    train_term_curves,
    write_report,
)
from fairseq_crild.pipeline.runner import StageFailed, run_stage
from fairseq_crild.tasks.distill_glue import read_meta


def _arch_args(cfg: dict, layers: int = 0) -> list:
    return ["--arch", "bert", "--encoder-layers", str(layers or cfg["encoder_layers"]),
            "--encoder-embed-dim", str(cfg["encoder_embed_dim"]),
            "--encoder-attention-heads", str(cfg["encoder_attention_heads"]),
            "--encoder-ffn-embed-dim", str(cfg["encoder_ffn_embed_dim"]),
            "--max-position-embeddings", str(cfg["max_position_embeddings"])]


def _base_config(ckpt: str) -> dict:
    from fairseq_crild.models.loading import saved_model_config

    return saved_model_config(ckpt)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Conversion and preparation keep their notes and warnings to themselves, as when they
    ran as child processes whose output the pipeline reduced to one line."""
    loggers = [logging.getLogger(name) for name in ("fairseq", "fairseq_crild")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def convert_base(base: str, out_dir: str) -> None:
    """The pretrained model (an HF folder, or ``minilm``) as OUT/base (model.pt, dict.txt);
    prints the ``--arch`` flags line crild-convert ends with. A failure is one StageFailed
    line, as crild-convert prints it."""
    from fairseq_crild.models.convert import convert_to_folder

    try:
        with _quiet():
            converted = convert_to_folder(base, out_dir, overwrite=True)
    except (CrildError, FileNotFoundError) as err:  # ConversionError, OutputExistsError, ...
        raise StageFailed(f"convert_hf_bert: error: {err}") from None
    print(converted.summary()[-1])


def prepare_data(glue_dir: str, task: str, dict_path: str, out_dir: str) -> None:
    """Binarises a task folder (or PAIRS) with the base's dictionary into ``out_dir`` with
    crild-prepare's defaults; prints its summary line. A failure is one StageFailed line, as
    crild-prepare prints it."""
    from fairseq_crild.data.binarize import MAX_UNK_RATE, prepare_task

    try:
        with _quiet():
            meta = prepare_task(glue_dir, task, dict_path, out_dir, None, True, None,
                                MAX_UNK_RATE, "refuse")
    except (CrildError, OSError, ValueError, RuntimeError) as err:  # OutputExistsError, ...
        raise StageFailed(f"prepare_glue: error: {err}") from None
    sizes = ", ".join(f"{k} {v}" for k, v in meta["splits"].items())
    print(f"wrote {out_dir}: {meta['task']} ({sizes})")


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
        prepare_data(folder, "PAIRS", os.path.join(base_dir, "dict.txt"), target)
    return target, read_meta(target).splits["train"]


def run(args: argparse.Namespace) -> str:
    """Runs (or, with ``args.dry_run``, lists as JSON) every stage of one run and returns
    its report.md text; ``args``: crild-pipeline's options."""
    from fairseq_crild.data.glue_tasks import get_task
    from fairseq_crild.outputs import check_not_an_input

    task = get_task(args.task).name
    preset, criterion = recipe.METHODS[args.method]
    if getattr(args, "kd_data", None) and criterion != "kd":
        raise ValueError(f"--kd-data: method {args.method} has no KD stage 2")
    for option in ("ild_data", "stage1_updates"):
        if getattr(args, option, None) and preset is None:
            raise ValueError(f"--{option.replace('_', '-')}: method {args.method} has no "
                             "ILD stage 1")
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
        convert_base(args.base, base_dir)
    base_ckpt = os.path.join(base_dir, "model.pt")
    data = os.path.join(out, "data", task)
    if not os.path.isfile(os.path.join(data, "meta.json")):
        prepare_data(args.glue_dir, task, os.path.join(base_dir, "dict.txt"), data)
    meta = read_meta(data)
    supplementary = {option: _prepare_pairs(getattr(args, option, None), out, base_dir,
                                            "--" + option.replace("_", "-"))
                     for option in ("ild_data", "kd_data")}
    budget = recipe.budget_for(args.budget, task, args.setting)
    if getattr(args, "ild_probe_every", 0):  # crild-pipeline refuses a negative value
        budget = dataclasses.replace(budget, ild_probe_every=args.ild_probe_every)
    stage2_epochs = getattr(args, "stage2_epochs", 0)
    if stage2_epochs:  # crild-pipeline refuses a negative value
        budget = dataclasses.replace(budget, stage2_epochs=stage2_epochs)
    stage1_updates = getattr(args, "stage1_updates", 0)
    if stage1_updates:
        budget = dataclasses.replace(budget, stage1_updates=stage1_updates)
    device = getattr(args, "device_flags", None) or recipe.device_args(
        recipe.resolve_device(args.device), args.precision,
        getattr(args, "dropout_impl", "torch"))
    commands: dict = {}

    def stage(name: str, save_dir: str, stage_args: list) -> dict:
        if args.dry_run:
            commands[name] = stage_args + device
            return {"wall_s": 0.0}
        return run_stage(name, save_dir, stage_args + device, args.quiet)

    metric = recipe.selection_metric(task, budget, recipe.metric_for(meta))
    n_train = recipe.setting_train_size(meta.splits["train"], args.setting)
    extra = recipe.setting_args(args.setting)  # every stage sees the setting's training set
    base_cfg = _base_config(base_ckpt)
    teacher_arch, student_arch = _arch_args(base_cfg), _arch_args(base_cfg, args.student_layers)
    wall = {}

    # full GLUE: one teacher (seed 1) for every student seed; the other settings draw their
    # training set from --seed, so each seed gets its own teacher on that same set
    teacher_dir = teacher_dir_of(out, task, args.budget, args.setting, args.seed)
    teacher_seed = args.seed if per_seed_teachers(args.setting) else 1
    teacher = args.teacher
    if teacher is None:
        rec = stage("teacher", teacher_dir, recipe.teacher_args(
            data, teacher_dir, base_ckpt, teacher_arch, n_train, metric, budget, teacher_seed)
            + extra)
        wall["teacher"] = rec["wall_s"]
        teacher = os.path.join(teacher_dir, recipe.teacher_checkpoint(args.setting))

    args.run_name = run_name(args.method, args.ild_data, args.ild_data_mode, args.kd_data,
                             stage2_epochs, stage1_updates)
    run_dir = os.path.join(out, "runs", task_folder(task, args.setting), args.run_name,
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
            + extra + ild_args + recipe.relation_kl_args(
                getattr(args, "relation_kl_impl", "torch")))["wall_s"]
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


def _report(args, task: str, meta: GlueMeta, budget, metric: str, preset, criterion: str,
            data: str, base_ckpt: str, teacher: str, run_dir: str, init, s2: str,
            wall: dict) -> str:
    """report.json / report.md / dev_curve.png of a finished run."""
    names = report_metric_names(list(meta.metrics), bool(meta.regression),
                                1 if meta.num_classes is None else meta.num_classes, metric)
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
        **distilled_teacher_dev(teacher, teacher_m, dev, metric, names),
        "student_dev": student["best"], "student_metrics": student["metrics"],
        "teacher_best_num_updates": teacher_m["best_num_updates"],
        "student_best_num_updates": student["best_num_updates"],
        "dev": dev,
        "params": {"teacher": count_parameters(teacher),
                   "student": count_parameters(student_ckpt)},
        "wall_s": wall, "teacher_checkpoint": teacher, "student_checkpoint": student_ckpt,
        "base_checkpoint": base_ckpt, "stages": stages,
        "stage1_loss_terms": last_loss_terms(s1_log) if s1_log else {},
        REPORT_FIELD: stage1_curves(s1_log) if s1_log else {},
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
