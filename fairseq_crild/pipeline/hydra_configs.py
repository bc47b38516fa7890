"""The recipe as ``fairseq-hydra-train`` configs, generated from the same stage arguments the
pipeline command runs (``recipe.py``), so the two can never drift apart.

Each stage's command line is parsed by fairseq itself (``parse_args_and_arch`` then
``convert_namespace_to_omegaconf``) and only the values that differ from fairseq's defaults
are written. Hydra cannot compute ``total_num_update`` from epochs and the training-set size,
so every budget is a folder of fully resolved configs: ``configs/<budget>/<TASK>/<stage>.yaml``
plus the paper's settings (few-sample, label noise, supplementary-task ILD) under
``configs/paper/<TASK>/<setting>/``. Run-specific paths are ``???`` (hydra's "must be given"),
so a forgotten ``task.data=`` or ``checkpoint.save_dir=`` fails before anything runs.
"""

from __future__ import annotations

import copy
import functools
import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from fairseq_crild.data.glue_tasks import TASKS
from fairseq_crild.locations import RELATIVE_USER_DIR, absolute_user_dir
from fairseq_crild.pipeline import recipe

# Both read from the one GLUE table (data.glue_tasks.TASKS), in its order: the official
# training-set sizes, which fix the number of updates of each schedule, and each task's first
# GLUE metric, the selection metric of budgets with selection="main".
GLUE_TRAIN_SIZES: Dict[str, int] = {
    name: spec.train_size for name, spec in TASKS.items() if spec.train_size is not None}
GLUE_METRICS: Dict[str, str] = {name: TASKS[name].main_metric for name in GLUE_TRAIN_SIZES}
# (teacher arch, student arch) per budget: BERT-base -> 6 layers as in the paper; the
# packaged 6-layer MiniLM -> 3 layers for CPU runs.
ARCHS: Dict[str, Tuple[List[str], List[str]]] = {
    "paper": (["--arch", "bert_hf_base"], ["--arch", "bert_student"]),
    "cpu": (["--arch", "bert_minilm_l6"], ["--arch", "bert_minilm_l3"]),
}
MISSING = "???"
FEW_SAMPLE, LABEL_NOISE = recipe.FEW_SAMPLE, recipe.LABEL_NOISE  # the paper's settings
_PATH_FIELDS = {
    ("task", "data"), ("task", "teacher_path"), ("task", "init_student_from"),
    ("task", "ild_data"), ("checkpoint", "save_dir"), ("checkpoint", "finetune_from_model"),
}
_DROP = {("common", "user_dir")}  # written explicitly below
_COMPONENTS = {"task", "model", "criterion", "optimizer", "lr_scheduler"}


@dataclass(frozen=True)
class StageConfig:
    """One config file: where it goes, the fairseq-train arguments it stands for, and the
    setting (full, few_sample, label_noise) whose teacher checkpoint the students read."""

    path: str
    args: List[str]
    setting: str = "full"


def _for_budget(budget_name: str, configs: List[StageConfig]) -> List[StageConfig]:
    """The CPU budgets run with ``--cpu`` (the recipe's commands are device-neutral); the
    paper budget targets GPUs: no --cpu, no CPU-only flags."""
    if budget_name != "paper":
        return [StageConfig(c.path, c.args + recipe.device_args("cpu"), c.setting)
                for c in configs]
    out = []
    for cfg in configs:
        args = [a for a in cfg.args if a != "--cpu"]
        i = args.index("--num-workers")
        out.append(StageConfig(cfg.path, args[:i] + args[i + 2:], cfg.setting))
    return out


def stage_configs(budget_name: str, task: str) -> List[StageConfig]:
    """The teacher, stage-1 (CR-ILD) and stage-2 (KD) configs of one task and budget; the
    paper budget also gets stage1_cr_ild_release.yaml (the authors' released script)."""
    configs = _stages(budget_name, os.path.join(budget_name, task), task, "full")
    if budget_name == "paper":
        budget = recipe.budget_for(budget_name, task)
        release = recipe.stage1_args("DATA", "SAVE", "cr_ild_release", "TEACHER", "BASE",
                                     ARCHS[budget_name][1], GLUE_TRAIN_SIZES[task], budget, 42)
        configs.append(StageConfig(os.path.join(budget_name, task,
                                                "stage1_cr_ild_release.yaml"), release))
    return _for_budget(budget_name, configs)


def paper_setting_configs(task: str) -> List[StageConfig]:
    """The paper's settings besides full GLUE: few-sample, label noise, supplementary ILD."""
    base = os.path.join("paper", task)
    configs = []
    for setting in ("few_sample", "label_noise"):
        configs += _stages("paper", os.path.join(base, setting), task, setting)
    # supplementary-task ILD: stage 1 reads unlabelled pairs from --ild-data instead of the
    # task's training set; the teacher and stage 2 are the task's own.
    supp_n = 100_000  # the authors' 100k Wikipedia pairs; set to your corpus's size
    stage1 = recipe.stage1_args("DATA", "SAVE", "cr_ild", "TEACHER", "BASE", ARCHS["paper"][1],
                                supp_n, recipe.budget_for("paper", task), 42)
    configs.append(StageConfig(os.path.join(base, "supplementary_ild", "stage1.yaml"),
                               stage1 + ["--ild-data", "ILD_DATA", "--ild-data-mode",
                                         "replace"]))
    return _for_budget("paper", configs)


def _stages(budget_name: str, base: str, task: str, setting: str) -> List[StageConfig]:
    budget = recipe.budget_for(budget_name, task, setting)
    teacher_arch, student_arch = ARCHS[budget_name]
    n_train = recipe.setting_train_size(GLUE_TRAIN_SIZES[task], setting)
    metric = recipe.selection_metric(task, budget, GLUE_METRICS[task])
    extra = recipe.setting_args(setting)
    teacher = recipe.teacher_args("DATA", "SAVE", "BASE", teacher_arch, n_train, metric,
                                  budget, 42)
    stage1 = recipe.stage1_args("DATA", "SAVE", "cr_ild", "TEACHER", "BASE", student_arch,
                                n_train, budget, 42)
    stage2 = recipe.stage2_args("DATA", "SAVE", "kd", "TEACHER", "STAGE1", "BASE",
                                student_arch, n_train, metric, budget, 42)
    return [StageConfig(os.path.join(base, f"{name}.yaml"), args + extra, setting)
            for name, args in (("teacher", teacher), ("stage1", stage1), ("stage2", stage2))]


def to_yaml(args: List[str], header: Optional[str] = None,
            user_dir: str = RELATIVE_USER_DIR) -> str:
    """fairseq-train arguments -> the hydra config fairseq would build from them, keeping only
    values that differ from fairseq's defaults for the same task/model/criterion, with
    ``common.user_dir: user_dir`` (the arguments are parsed with the plugin's absolute
    folder, so rendering works from any directory)."""
    from omegaconf import OmegaConf

    args = absolute_user_dir(args)
    full = _parse(args)
    named = [args[0]] + _named_only(args)
    default = _defaults(tuple(named))
    out: Dict[str, Dict] = {"common": {"user_dir": user_dir}}
    for group, values in full.items():
        if not isinstance(values, dict):
            continue
        base, linked = default.get(group) or {}, _interpolated_fields(group, values)
        for key, value in values.items():
            if (group, key) in _DROP or (key in linked and _lookup(full, linked[key]) == value):
                continue  # interpolations (optimizer.lr -> optimization.lr) stay linked
            if (group, key) in _PATH_FIELDS and value not in (None, ""):
                value = MISSING
            named_choice = key == "_name" and group in _COMPONENTS
            # model sizes always: under hydra, fairseq fills the model section from the
            # dataclass defaults before the architecture function runs, so an arch name alone
            # would silently build bert's default sizes
            always = key == "ild_preset" or group == "model"
            if named_choice or always or (key != "_name"
                                                           and value != base.get(key)):
                out.setdefault(group, {})[key] = value
    out["hydra"] = {"run": {"dir": "."}, "output_subdir": None}
    text = OmegaConf.to_yaml(OmegaConf.create(out))
    return (header or "") + text


def _named_only(args: List[str]) -> List[str]:
    """Just the component choices (task, arch, criterion, optimizer, scheduler, user dir)."""
    keep = {"--user-dir", "--task", "--arch", "--criterion", "--optimizer", "--lr-scheduler"}
    out = []
    for i, a in enumerate(args):
        if a in keep:
            out += [a, args[i + 1]]
    if "polynomial_decay" in out:  # a required field without a default
        out += ["--total-num-update", "1"]
    return out


def _lookup(cfg: Dict, dotted: str) -> object:
    for part in dotted.split("."):
        cfg = cfg.get(part) if isinstance(cfg, dict) else None
    return cfg


def _interpolated_fields(group: str, values: Dict) -> Dict[str, str]:
    """field -> target of fields whose dataclass default is an interpolation such as
    ``${optimization.lr}``."""
    import dataclasses

    from fairseq.dataclass.configs import FairseqConfig
    from fairseq.models import ARCH_MODEL_NAME_REGISTRY, MODEL_DATACLASS_REGISTRY
    from fairseq.registry import REGISTRIES
    from fairseq.tasks import TASK_DATACLASS_REGISTRY

    name = values.get("_name")
    if group == "task":
        dc = TASK_DATACLASS_REGISTRY.get(name)
    elif group == "model":
        dc = MODEL_DATACLASS_REGISTRY.get(ARCH_MODEL_NAME_REGISTRY.get(name, name))
    elif group in REGISTRIES:
        dc = REGISTRIES[group]["dataclass_registry"].get(name)
    else:
        top = FairseqConfig.__dataclass_fields__.get(group)
        dc = top.type if top is not None and dataclasses.is_dataclass(top.type) else None
    if dc is None:
        return {}
    return {f.name: f.default[2:-1] for f in dataclasses.fields(dc)
            if isinstance(f.default, str) and f.default.startswith("${")}


@functools.lru_cache(maxsize=None)
def _defaults_cached(named: Tuple[str, ...]) -> Dict:
    return _parse(list(named))


def _defaults(named: Tuple[str, ...]) -> Dict:
    """fairseq's defaults for these component choices: shared by every task's config of a
    stage, so parsed once (hydra's compose is most of the rendering time)."""
    return copy.deepcopy(_defaults_cached(named))


def _parse(args: List[str]) -> Dict:
    from fairseq import options
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from omegaconf import OmegaConf

    parser = options.get_training_parser()
    ns = options.parse_args_and_arch(parser, input_args=args)
    cfg = convert_namespace_to_omegaconf(ns)
    return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)


HEADER = ("# Generated by scripts/write_hydra_configs.py from fairseq_crild/pipeline/recipe.py;"
          " do not edit.\n# fairseq-hydra-train --config-dir configs/{folder} --config-name {name} "
          "task.data=DATA checkpoint.save_dir=DIR{more}\n")


def render_all(only: Tuple[str, ...] = ("",),
               user_dir: str = RELATIVE_USER_DIR) -> Dict[str, str]:
    """Every config file (path relative to configs/) whose path starts with one of ``only``,
    and its text, with ``common.user_dir: user_dir`` (the committed configs: ``fairseq_crild``,
    relative to the checkout's root; ``crild-write-configs``: the absolute folder). Each is
    run as ``--config-dir configs/FOLDER --config-name STAGE``: fairseq
    merges its schema (every option's default) only into a top-level config name."""
    files: Dict[str, str] = {}
    configs = []
    for task in GLUE_TRAIN_SIZES:
        for budget_name in ARCHS:
            configs += stage_configs(budget_name, task)
        configs += paper_setting_configs(task)
    for cfg in configs:
        if not cfg.path.startswith(tuple(only)):
            continue
        folder, name = os.path.split(cfg.path[: -len(".yaml")])
        more = ""
        if "--teacher-path" in cfg.args:  # the teacher run's checkpoint for this setting
            more += " task.teacher_path=TEACHER/" + recipe.teacher_checkpoint(cfg.setting)
        if "--init-student-from" in cfg.args:
            more += " task.init_student_from=BASE.pt"
        if "--finetune-from-model" in cfg.args:
            more += " checkpoint.finetune_from_model=" + (
                "BASE.pt" if name.endswith("teacher") else "STAGE1/checkpoint_last.pt")
        if "--ild-data" in cfg.args:
            more += " task.ild_data=PAIRS_DATA"
        header = HEADER.format(folder=folder, name=name, more=more)
        if name == "teacher":
            header += (f"# the students of this setting distil from this run's "
                       f"{recipe.teacher_checkpoint(cfg.setting)}\n")
        files[cfg.path] = to_yaml(cfg.args, header, user_dir)
    return files
