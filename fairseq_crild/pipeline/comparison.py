"""Planning a methods x seeds comparison: which pipeline runs are left, in which order, and
what to prune once a run has its report. Pure (no processes), so tests can check the plan."""

import os
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Optional

from fairseq_crild.pipeline import recipe

#: the comparison's methods, in table order
COMPARED = ("finetune", "kd", "pkd", "tinybert", "l_ild", "cr_ild", "cr_ild_release",
            "bert_emd")


def run_name(method: str, ild_data: Optional[str] = None, ild_data_mode: str = "replace",
             kd_data: Optional[str] = None, stage2_epochs: int = 0,
             stage1_updates: int = 0) -> str:
    """A run's folder and report name: the method, plus the supplementary data it used
    (``kd+kd-data=QNLI-pairs``) and stage lengths other than the budget's, so runs with
    and without them sit side by side (a finished stage is reused by its folder)."""
    name = method
    if ild_data:
        name += f"+ild-data={os.path.basename(os.path.normpath(ild_data))}"
        if ild_data_mode == "concat":
            name += "+task"
    if stage1_updates:
        name += f"+stage1-updates={stage1_updates}"
    if kd_data:
        name += f"+kd-data={os.path.basename(os.path.normpath(kd_data))}"
    if stage2_epochs:
        name += f"+stage2-epochs={stage2_epochs}"
    return name


def task_folder(task: str, setting: str = "full") -> str:
    """The folder of a task's runs under ``--out``/runs: the task, or ``TASK-SETTING`` for the
    paper's harder settings (few_sample, label_noise), so their tables never mix."""
    return task if setting == "full" else f"{task}-{setting}"


def teacher_dir(out: str, task: str, budget: str, setting: str = "full", seed: int = 1) -> str:
    """Where the pipeline trains the teacher of a run: one per task and budget, or, in a
    harder setting, one per seed (it trains on that seed's subset / noisy labels)."""
    name = f"{task}-{budget}" if setting == "full" else f"{task}-{budget}-{setting}-seed{seed}"
    return os.path.join(out, "teachers", name)


def per_seed_teachers(setting: str) -> bool:
    """Whether each seed has its own teacher (see :func:`teacher_dir`)."""
    return setting != "full"


@dataclass(frozen=True)
class PlannedRun:
    task: str
    method: str
    seed: int
    name: str = ""  # the run's name (run_name); the method's when empty
    setting: str = "full"

    def run_dir(self, out: str) -> str:
        """Where the pipeline writes this run (``--out``'s runs/TASK[-SETTING]/NAME/seedN)."""
        return os.path.join(out, "runs", task_folder(self.task, self.setting),
                            self.name or self.method, f"seed{self.seed}")

    def finished(self, out: str) -> bool:
        return os.path.isfile(os.path.join(self.run_dir(out), "report.json"))


def parse_methods(spec: str) -> List[str]:
    methods = [m.strip() for m in spec.split(",") if m.strip()]
    unknown = [m for m in methods if m not in recipe.METHODS]
    if unknown or not methods:
        raise ValueError(f"--methods {spec!r}: unknown {unknown}; choose from "
                         f"{', '.join(sorted(recipe.METHODS))}")
    return methods


def parse_seeds(spec: str) -> List[int]:
    try:
        seeds = [int(s) for s in spec.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"--seeds {spec!r}: expected comma-separated integers") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds {spec!r}: expected distinct seeds")
    return seeds


def plan(task: str, methods: Iterable[str], seeds: Iterable[int], out: str,
         naming: Callable[[str], str] = str, setting: str = "full") -> List[PlannedRun]:
    """The runs without a report yet, seed-major: a session cut short leaves whole seeds (every
    method of seed 1 before any of seed 2), which is what a paired comparison needs.
    ``naming`` maps a method to its run name (see :func:`run_name`)."""
    methods = list(methods)
    return [run for seed in seeds
            for run in (PlannedRun(task, m, seed, naming(m), setting) for m in methods)
            if not run.finished(out)]


def teacher_groups(todo: List[PlannedRun]) -> List[List[PlannedRun]]:
    """Runs that share one teacher, in plan order: all of them, or each seed's runs in a
    harder setting (the first run of a group trains its teacher alone)."""
    groups: Dict[Any, List[PlannedRun]] = {}
    for run in todo:
        key = run.seed if per_seed_teachers(run.setting) else None
        groups.setdefault(key, []).append(run)
    return list(groups.values())


def prunable_checkpoints(run_dir: str) -> List[str]:
    """Checkpoints a finished run no longer needs: everything but stage 2's best (the student
    the report measured). Stage 1's last checkpoint only seeds stage 2, which is done."""
    doomed = []
    for stage in ("stage1", "stage2"):
        folder = os.path.join(run_dir, stage)
        if not os.path.isfile(os.path.join(folder, "done.json")):
            continue  # an unfinished stage resumes from its checkpoints
        for name in sorted(os.listdir(folder)):
            if name.endswith(".pt") and not (stage == "stage2" and name == "checkpoint_best.pt"):
                doomed.append(os.path.join(folder, name))
    return doomed
