"""The paper's recipe as data: methods, per-task budgets, and the fairseq-train arguments of
each stage. Kept free of process handling so tests can check the commands it builds."""

from dataclasses import dataclass
from typing import Dict, List, Optional

# method -> (stage-1 ILD preset or None, stage-2 criterion)
METHODS: Dict[str, tuple] = {
    "finetune": (None, "glue_ce"),
    "kd": (None, "kd"),
    "pkd": ("pkd", "kd"),
    "tinybert": ("tinybert", "kd"),
    "minilm": ("minilm", "kd"),
    "l_ild": ("l_ild", "kd"),
    "cr_ild": ("cr_ild", "kd"),
    "bert_emd": ("emd", "kd"),  # BERT-EMD many-to-many ILD, then prediction-layer KD
}

SMALL = {"RTE", "MRPC", "STS-B", "CoLA", "WNLI"}
MEDIUM = {"SST-2", "QNLI"}


@dataclass(frozen=True)
class Budget:
    """Epochs per stage and the max length; ``max_update`` caps every stage (0 = none)."""

    teacher_epochs: int
    stage1_epochs: int
    stage2_epochs: int
    max_len: int = 128
    max_update: int = 0
    eval_every: int = 50
    teacher_lr: float = 2e-5
    student_lr: float = 3e-5


def paper_stage1_epochs(task: str) -> int:
    """20 epochs for small tasks, 10 for SST-2/QNLI, 5 for MNLI/QQP (the authors' scripts)."""
    return 20 if task in SMALL else 10 if task in MEDIUM else 5


def budget_for(name: str, task: str) -> Budget:
    if name == "paper":  # the authors' settings (BERT-base teacher, lr 2e-5 / 3e-5)
        return Budget(4, paper_stage1_epochs(task), 4)
    # CPU budgets for the 384-wide MiniLM. Measured on RTE: the teacher fine-tunes best at
    # 2e-5 (55.9 after 3 epochs; 1e-4 fell to 48.5), the 3-layer student needs 1e-4 to move
    # off the majority class within one epoch per stage.
    if name == "cpu":  # the quickstart: RTE with CR-ILD in under 20 minutes on 2 cores
        # (3 teacher epochs: after 2 the teacher's soft labels are still near uniform and
        # stage-2 KD has nothing to transfer)
        return Budget(3, 1, 1, teacher_lr=2e-5, student_lr=1e-4)
    if name == "table":  # one session's comparison table: 6 methods x 3 seeds on RTE
        return Budget(3, 1, 1, teacher_lr=2e-5, student_lr=1e-4)
    if name == "smoke":  # tests: a handful of updates per stage
        return Budget(1, 1, 1, max_len=64, max_update=4, eval_every=2)
    raise ValueError(f"--budget {name!r}: choose paper, cpu, table or smoke")


def metric_for(task_meta: dict) -> str:
    return task_meta.get("main_metric") or task_meta["metrics"][0]


def _schedule(lr: float, batch: int, epochs: int, n_train: int, budget: Budget,
              warmup: float = 0.1) -> List[str]:
    """AdamW (wd 0.01), linear warm-up then linear decay over the run, as the paper."""
    updates = -(-n_train // batch) * epochs
    if budget.max_update:
        updates = min(updates, budget.max_update)
    args = ["--optimizer", "adam", "--adam-betas", "(0.9,0.999)", "--adam-eps", "1e-6",
            "--weight-decay", "0.01", "--lr", str(lr), "--lr-scheduler", "polynomial_decay",
            "--warmup-updates", str(max(1, int(updates * warmup))),
            "--total-num-update", str(updates), "--batch-size", str(batch),
            "--max-epoch", str(epochs)]
    if budget.max_update:
        args += ["--max-update", str(budget.max_update)]
    return args


def common_args(data: str, save_dir: str, seed: int, budget: Budget) -> List[str]:
    return [data, "--user-dir", "fairseq_crild", "--task", "distill_glue", "--cpu",
            "--num-workers", "0", "--seed", str(seed), "--save-dir", save_dir,
            "--max-positions", str(budget.max_len), "--log-format", "json",
            "--log-interval", str(min(10, budget.eval_every)), "--no-epoch-checkpoints"]


def selection_args(metric: str, budget: Budget) -> List[str]:
    """Dev evaluation every ``eval_every`` updates, each followed by a save: fairseq updates
    checkpoint_best.pt only when it saves, so a mid-epoch best would otherwise be reported
    from the log but missing from checkpoint_best.pt. One interval checkpoint is kept."""
    every = str(budget.eval_every)
    return ["--best-checkpoint-metric", metric, "--maximize-best-checkpoint-metric",
            "--validate-interval-updates", every, "--save-interval-updates", every,
            "--keep-interval-updates", "1"]


def teacher_args(data: str, save_dir: str, base_ckpt: str, arch_args: List[str], n_train: int,
                 metric: str, budget: Budget, seed: int) -> List[str]:
    return (common_args(data, save_dir, seed, budget) + arch_args
            + ["--criterion", "glue_ce", "--finetune-from-model", base_ckpt]
            + _schedule(budget.teacher_lr, 16, budget.teacher_epochs, n_train, budget)
            + selection_args(metric, budget))


def stage1_args(data: str, save_dir: str, preset: str, teacher: str, base_ckpt: str,
                student_args: List[str], n_train: int, budget: Budget, seed: int) -> List[str]:
    return (common_args(data, save_dir, seed, budget) + student_args
            + ["--criterion", "cr_ild", "--ild-preset", preset, "--teacher-path", teacher,
               "--init-student-from", base_ckpt, "--init-student-layers", "first",
               "--disable-validation"]
            + _schedule(budget.student_lr, 32, budget.stage1_epochs, n_train, budget))


def stage2_args(data: str, save_dir: str, criterion: str, teacher: Optional[str],
                init_ckpt: Optional[str], base_ckpt: str, student_args: List[str],
                n_train: int, metric: str, budget: Budget, seed: int) -> List[str]:
    args = common_args(data, save_dir, seed, budget) + student_args + ["--criterion", criterion]
    if criterion == "kd":
        args += ["--teacher-path", teacher, "--temperature", "2"]
    if init_ckpt:
        args += ["--finetune-from-model", init_ckpt]
    else:  # no stage 1: the student starts from the pretrained model's first layers
        args += ["--init-student-from", base_ckpt, "--init-student-layers", "first"]
    return (args + _schedule(budget.student_lr, 16, budget.stage2_epochs, n_train, budget)
            + selection_args(metric, budget))
