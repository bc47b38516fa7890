"""The paper's recipe as data: methods, per-task budgets, and the fairseq-train arguments of
each stage. Kept free of process handling so tests can check the commands it builds.

The ``paper`` budget is the authors' protocol (README "Fidelity"): BertAdam after a global clip
to 1.0 for every stage, the Linear(relu(pooler)) head without dropout, selection on accuracy
(MRPC, QQP), (Pearson + Spearman) / 2 (STS-B), MCC (CoLA) or accuracy, dev evaluated every 100
updates (teacher) / 50 (stage 2) and never at an epoch end, the last incomplete batch of
every stage skipped (teacher included). The CPU budgets keep our defaults: plain Adam
(decoupled decay), standard
BERT head (dropout + Linear), selection on each task's first GLUE metric (F1 for MRPC/QQP,
Pearson for STS-B), an evaluation at every epoch end too, every batch kept.
"""

from dataclasses import dataclass, replace
from typing import Dict, List, Optional

from fairseq_crild.data.glue_tasks import TRAIN_PROBE
from fairseq_crild.data.meta import GlueMeta
from fairseq_crild.distill.relation_kernel import RELATION_KL_IMPLS

# method -> (stage-1 ILD preset or None, stage-2 criterion)
METHODS: Dict[str, tuple] = {
    "finetune": (None, "glue_ce"),
    "kd": (None, "kd"),
    "pkd": ("pkd", "kd"),
    "tinybert": ("tinybert", "kd"),
    "minilm": ("minilm", "kd"),
    "l_ild": ("l_ild", "kd"),
    "cr_ild": ("cr_ild", "kd"),  # the paper's method: mixup + consistency on Q/K/V relations
    "cr_ild_release": ("cr_ild_release", "kd"),  # the authors' released script
    "bert_emd": ("emd", "kd"),  # BERT-EMD many-to-many ILD, then prediction-layer KD
}

SMALL = {"RTE", "MRPC", "STS-B", "CoLA", "WNLI"}
MEDIUM = {"SST-2", "QNLI"}

# The paper's settings besides full GLUE: its few-sample and noisy-label sets.
SETTINGS = ("full", "few_sample", "label_noise")
FEW_SAMPLE = 1000  # training examples, drawn per seed by the task
LABEL_NOISE = 0.3  # probability that a training label is flipped, independently per example
FEW_SAMPLE_TEACHER_EPOCHS = 20
CPU_FEW_SAMPLE_EPOCHS = 10  # the CPU budgets' few-sample teacher and stages (authors: 20, 20, 4)

# The CPU budgets' teacher recipe per task, (lr, epochs), from the dev sweep of
# all-MiniLM-L6-v2 with mean pooling (scripts/teacher_sweep.py; README "Teacher sweep").
CPU_TEACHERS: Dict[str, tuple] = {"RTE": (2e-5, 10), "STS-B": (1e-4, 3), "CoLA": (5e-5, 3)}

# The authors' model selection; tasks not named select on accuracy.
AUTHORS_SELECTION: Dict[str, str] = {
    "MRPC": "accuracy", "QQP": "accuracy", "STS-B": "pearson_spearman", "CoLA": "mcc",
}
# fairseq has no "never" for --validate-interval (epochs): it evaluates at the end of epoch e
# when e % interval == 0, so an interval beyond any run's epochs switches epoch-end
# evaluations off and leaves only the --validate-interval-updates ones.
NO_EPOCH_EVAL = 1_000_000


@dataclass(frozen=True)
class Budget:
    """Epochs, batches and learning rates per stage, and the protocol choices that differ
    between the authors (``paper``) and our CPU budgets. ``max_update`` caps every stage
    (0 = none)."""

    teacher_epochs: int
    stage1_epochs: int
    stage2_epochs: int
    max_len: int = 128
    max_update: int = 0
    eval_every: int = 50  # stage-2 dev evaluation interval, in updates
    teacher_lr: float = 2e-5
    student_lr: float = 3e-5
    teacher_eval_every: int = 0  # the teacher's interval (0 = eval_every)
    teacher_batch: int = 16
    stage1_batch: int = 32
    stage2_batch: int = 16
    optimizer: str = "adam"  # "bert_adam": the authors' (no bias correction, per-param clip)
    clip_norm: float = 0.0  # global gradient-norm clip before the optimizer (0 = none)
    head: str = "standard"  # "authors": Linear(relu(pooler)), no dropout
    selection: str = "main"  # "authors": AUTHORS_SELECTION; "main": the task's first metric
    epoch_end_eval: bool = True  # also evaluate at every epoch end (fairseq's default)
    drop_last: bool = False  # every stage skips the last incomplete training batch
    stage1_updates: int = 0  # stage 1 runs this many updates, not stage1_epochs (0 = off)
    sentence_pooling: str = "cls"  # "mean": the head reads the token mean (sentence encoders)
    # stage 1 evaluates its ILD loss on dev text and on a fixed sample of its training inputs
    # every N updates (0 = no stage-1 evaluation): the overfitting curves
    ild_probe_every: int = 0


def paper_stage1_epochs(task: str) -> int:
    """20 epochs for small tasks, 10 for SST-2/QNLI, 5 for MNLI/QQP (the authors' scripts).
    By task name, also in the few-sample setting (the authors' per-task scripts)."""
    return 20 if task in SMALL else 10 if task in MEDIUM else 5


def budget_for(name: str, task: str, setting: str = "full") -> Budget:
    """The budget ``name`` for ``task`` in ``setting`` (full, few_sample, label_noise)."""
    if setting not in SETTINGS:
        raise ValueError(f"--setting {setting!r}: choose {', '.join(SETTINGS)}")
    if name == "paper":  # the authors' settings (BERT-base teacher, lr 2e-5 / 3e-5)
        budget = Budget(4, paper_stage1_epochs(task), 4, eval_every=50, teacher_eval_every=100,
                        optimizer="bert_adam", clip_norm=1.0, head="authors",
                        selection="authors", epoch_end_eval=False, drop_last=True)
        if setting == "few_sample":  # the authors fine-tune the few-sample teacher longer
            budget = replace(budget, teacher_epochs=FEW_SAMPLE_TEACHER_EPOCHS)
        return budget
    # CPU budgets for the 384-wide all-MiniLM-L6-v2, read through its mean pooling (its
    # [CLS] pooler is untrained): each task's teacher recipe as the dev sweep chose it
    # (README "Teacher sweep"); the 3-layer student learns at 1e-4.
    teacher_lr, teacher_epochs = CPU_TEACHERS.get(task, (2e-5, 3))
    table = Budget(teacher_epochs, 3, 3, teacher_lr=teacher_lr, student_lr=1e-4,
                   stage2_batch=32, eval_every=60, sentence_pooling="mean")
    if name in ("table", "cpu") and setting == "few_sample":
        # 1,000 examples: longer runs, as the authors train their few-sample teacher 20
        # epochs and stage 1 by the task's name (20 for small tasks); halved to fit the CPU.
        # Stage 2 at batch 16 for as many epochs (630 updates): at 4 epochs of batch 32 (128
        # updates) KD ended at Pearson 5-20 on STS-B, far from converged. The teacher
        # evaluates every 30 updates (63 an epoch), stage 2 every 60.
        return replace(table, teacher_epochs=CPU_FEW_SAMPLE_EPOCHS,
                       stage1_epochs=CPU_FEW_SAMPLE_EPOCHS, stage2_epochs=CPU_FEW_SAMPLE_EPOCHS,
                       stage2_batch=16, eval_every=60, teacher_eval_every=30)
    if name == "table":  # one task's whole comparison in one session on 2 cores
        return table  # (8 methods x 5 seeds, two single-thread runs at a time)
    if name == "cpu":  # the quickstart: the table's teacher and stage 2, one ILD epoch
        return replace(table, stage1_epochs=1)
    if name == "smoke":  # tests: a handful of updates per stage
        return Budget(1, 1, 1, max_len=64, max_update=4, eval_every=2)
    raise ValueError(f"--budget {name!r}: choose paper, cpu, table or smoke")


def metric_for(task_meta: GlueMeta) -> str:
    """The task's first GLUE metric (the CPU budgets' selection metric)."""
    return task_meta.main_metric or task_meta.metrics[0]


def selection_metric(task: str, budget: Budget, main_metric: str) -> str:
    """The dev metric that picks the best checkpoint: the authors' per-task choice under
    ``selection="authors"``, else ``main_metric`` (the task's first GLUE metric)."""
    if budget.selection == "authors":
        return AUTHORS_SELECTION.get(task, "accuracy")
    if budget.selection != "main":
        raise ValueError(f"Budget.selection {budget.selection!r}: choose 'authors' or 'main'")
    return main_metric


def setting_args(setting: str) -> List[str]:
    """Task options of a setting, for every stage (the task draws the subset and the flipped
    labels from --seed, so a seed's teacher and students see the same training set)."""
    if setting == "few_sample":
        return ["--train-subset-size", str(FEW_SAMPLE)]
    if setting == "label_noise":
        return ["--label-noise", str(LABEL_NOISE)]
    if setting != "full":
        raise ValueError(f"--setting {setting!r}: choose {', '.join(SETTINGS)}")
    return []


def setting_train_size(n_train: int, setting: str) -> int:
    """Training examples a setting trains on (fixes the number of scheduled updates)."""
    return min(n_train, FEW_SAMPLE) if setting == "few_sample" else n_train


def teacher_checkpoint(setting: str) -> str:
    """Which teacher checkpoint the students distil from: the best dev evaluation, except
    under label noise, where the authors keep the last one (their evaluation interval never
    fires on these sets)."""
    return "checkpoint_last.pt" if setting == "label_noise" else "checkpoint_best.pt"


def head_args(budget: Budget) -> List[str]:
    """Classifier head options, for the teacher and every student: what the head reads
    (``sentence_pooling``) and what it does with it (``head``)."""
    if budget.head not in ("authors", "standard"):
        raise ValueError(f"Budget.head {budget.head!r}: choose 'authors' or 'standard'")
    if budget.sentence_pooling not in ("cls", "mean"):
        raise ValueError(f"Budget.sentence_pooling {budget.sentence_pooling!r}: choose 'cls' "
                         "or 'mean'")
    args = ["--sentence-pooling", "mean"] if budget.sentence_pooling == "mean" else []
    if budget.head == "authors":  # Linear(relu(pooled)), no dropout
        args += ["--classifier-activation", "relu", "--pooler-dropout", "0"]
    return args  # "standard": the model's defaults, dropout 0.1 + Linear(pooled)


def optimizer_args(budget: Budget) -> List[str]:
    """Adam (decoupled weight decay 0.01, none on biases and LayerNorm weights), or the
    authors' BertAdam (no bias correction, each parameter's gradient clipped to norm 1.0
    before its moment update) after fairseq's global --clip-norm."""
    if budget.optimizer not in ("adam", "bert_adam"):
        raise ValueError(f"Budget.optimizer {budget.optimizer!r}: choose adam or bert_adam")
    args = ["--optimizer", budget.optimizer, "--adam-betas", "(0.9,0.999)", "--adam-eps",
            "1e-6", "--weight-decay", "0.01"]
    if budget.clip_norm:
        args += ["--clip-norm", str(budget.clip_norm)]
    return args


def updates_per_epoch(n_train: int, batch: int, drop_last: bool = False) -> int:
    """Optimizer updates in one epoch of ``n_train`` examples (one process)."""
    return n_train // batch if drop_last else -(-n_train // batch)


def _schedule(lr: float, batch: int, epochs: int, n_train: int, budget: Budget,
              warmup: float = 0.1, drop_last: bool = False, updates: int = 0) -> List[str]:
    """The budget's optimizer, linear warm-up (10%) then linear decay over the run: of
    ``epochs`` epochs or, given ``updates``, of that many updates with no epoch limit (so
    the consistency weight ramps over updates, as the criterion does without --max-epoch)."""
    by_updates = updates > 0
    if not by_updates:
        updates = updates_per_epoch(n_train, batch, drop_last) * epochs
    if budget.max_update:
        updates = min(updates, budget.max_update)
    args = optimizer_args(budget) + [
        "--lr", str(lr), "--lr-scheduler", "polynomial_decay",
        "--warmup-updates", str(max(1, int(updates * warmup))),
        "--total-num-update", str(updates), "--batch-size", str(batch)]
    if not by_updates:
        args += ["--max-epoch", str(epochs)]
    if drop_last:
        args += ["--drop-last-train-batch"]
    if by_updates:
        args += ["--max-update", str(updates)]
    elif budget.max_update:
        args += ["--max-update", str(budget.max_update)]
    return args


DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("fp32", "bf16", "fp16")


def resolve_device(choice: str, cuda_available: Optional[bool] = None) -> str:
    """``auto`` (CUDA when this machine has a CUDA device, else the CPU), ``cpu`` or
    ``cuda``; ``cuda`` without a CUDA device is refused."""
    if choice not in DEVICES:
        raise ValueError(f"--device {choice!r}: choose {', '.join(DEVICES)}")
    if cuda_available is None:
        import torch

        cuda_available = torch.cuda.is_available()
    if choice == "auto":
        return "cuda" if cuda_available else "cpu"
    if choice == "cuda" and not cuda_available:
        raise ValueError("--device cuda: this machine has no CUDA device (torch "
                         ".cuda.is_available() is False); use --device cpu or auto")
    return choice


DROPOUT_IMPLS = ("torch", "hash")


def device_args(device: str, precision: str = "fp32", dropout_impl: str = "torch") -> List[str]:
    """fairseq-train flags of every stage for ``device`` (cpu or cuda, resolved),
    ``precision`` and ``dropout_impl``: ``--cpu`` only on the CPU; on CUDA one process
    (``--distributed-world-size 1``: the recipe's batches and update counts are per update of
    one process, and fairseq would otherwise spread a run over every visible GPU, multiplying
    the batch); ``--bf16`` on either device, ``--fp16`` on CUDA only (fairseq's fp16 is
    CUDA-only); ``--dropout-impl hash`` (the model's parallel CPU dropout mask) when asked."""
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device {device!r}: resolve it first (cpu or cuda)")
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: choose {', '.join(PRECISIONS)}")
    if device == "cpu" and precision == "fp16":
        raise ValueError("--fp16 needs a GPU; use --bf16 on the CPU")
    args = ["--cpu"] if device == "cpu" else ["--distributed-world-size", "1"]
    if precision != "fp32":
        args.append(f"--{precision}")
    if dropout_impl not in DROPOUT_IMPLS:
        raise ValueError(f"--dropout-impl {dropout_impl!r}: choose {', '.join(DROPOUT_IMPLS)}")
    if dropout_impl != "torch":
        args += ["--dropout-impl", dropout_impl]
    return args


def common_args(data: str, save_dir: str, seed: int, budget: Budget) -> List[str]:
    """Options of every stage; device-neutral (the caller adds :func:`device_args`)."""
    return [data, "--user-dir", "fairseq_crild", "--task", "distill_glue",
            "--num-workers", "0", "--seed", str(seed), "--save-dir", save_dir,
            "--max-positions", str(budget.max_len), "--log-format", "json",
            "--log-interval", str(min(10, budget.eval_every)), "--no-epoch-checkpoints"]


def selection_args(metric: str, budget: Budget, every: int = 0) -> List[str]:
    """Dev evaluation every ``every`` updates (default the budget's ``eval_every``), each
    followed by a save: fairseq updates checkpoint_best.pt only when it saves, so a mid-epoch
    best would otherwise be reported from the log but missing from checkpoint_best.pt. One
    interval checkpoint is kept.

    Without ``epoch_end_eval`` no evaluation runs at an epoch end (epoch-end saves still
    write checkpoint_last.pt). fairseq still evaluates once when ``--max-update`` stops a run
    (its ``should_stop`` forces a validation before the final save); the paper budget sets no
    --max-update, so it has none."""
    every_s = str(every or budget.eval_every)
    args = ["--best-checkpoint-metric", metric, "--maximize-best-checkpoint-metric",
            "--validate-interval-updates", every_s, "--save-interval-updates", every_s,
            "--keep-interval-updates", "1"]
    if not budget.epoch_end_eval:
        args += ["--validate-interval", str(NO_EPOCH_EVAL)]
    return args


def teacher_args(data: str, save_dir: str, base_ckpt: str, arch_args: List[str], n_train: int,
                 metric: str, budget: Budget, seed: int) -> List[str]:
    return (common_args(data, save_dir, seed, budget) + arch_args + head_args(budget)
            + ["--criterion", "glue_ce", "--finetune-from-model", base_ckpt]
            + _schedule(budget.teacher_lr, budget.teacher_batch, budget.teacher_epochs,
                        n_train, budget, drop_last=budget.drop_last)
            + selection_args(metric, budget, budget.teacher_eval_every))


def stage1_args(data: str, save_dir: str, preset: str, teacher: str, base_ckpt: str,
                student_args: List[str], n_train: int, budget: Budget, seed: int) -> List[str]:
    return (common_args(data, save_dir, seed, budget) + student_args + head_args(budget)
            + ["--criterion", "cr_ild", "--ild-preset", preset, "--teacher-path", teacher,
               "--init-student-from", base_ckpt, "--init-student-layers", "first"]
            + ild_probe_args(budget)
            + _schedule(budget.student_lr, budget.stage1_batch, budget.stage1_epochs, n_train,
                        budget, drop_last=budget.drop_last, updates=budget.stage1_updates))


def relation_kl_args(impl: str) -> List[str]:
    """Stage 1's ``--relation-kl-impl`` (cr_ild's): nothing for the default torch path."""
    if impl not in RELATION_KL_IMPLS:
        raise ValueError(f"--relation-kl-impl {impl!r}: choose {', '.join(RELATION_KL_IMPLS)}")
    return [] if impl == "torch" else ["--relation-kl-impl", impl]


def ild_probe_args(budget: Budget) -> List[str]:
    """Stage 1 has no head to select on: without probes it never evaluates. With
    ``ild_probe_every`` it logs the criterion's loss (eval mode, no mixup) on dev text
    (``valid``) and on a fixed sample of its training inputs (``train_probe``) every N updates
    and at each epoch end; fairseq reseeds every update, so training is unchanged, and stage 2
    still starts from checkpoint_last.pt."""
    if not budget.ild_probe_every:
        return ["--disable-validation"]
    return ["--valid-subset", f"valid,{TRAIN_PROBE}",
            "--validate-interval-updates", str(budget.ild_probe_every)]


def stage2_args(data: str, save_dir: str, criterion: str, teacher: Optional[str],
                init_ckpt: Optional[str], base_ckpt: str, student_args: List[str],
                n_train: int, metric: str, budget: Budget, seed: int) -> List[str]:
    args = (common_args(data, save_dir, seed, budget) + student_args + head_args(budget)
            + ["--criterion", criterion])
    if criterion == "kd":
        args += ["--teacher-path", teacher, "--temperature", "2"]
    if init_ckpt:
        args += ["--finetune-from-model", init_ckpt]
    else:  # no stage 1: the student starts from the pretrained model's first layers
        args += ["--init-student-from", base_ckpt, "--init-student-layers", "first"]
    return (args + _schedule(budget.student_lr, budget.stage2_batch, budget.stage2_epochs,
                             n_train, budget, drop_last=budget.drop_last)
            + selection_args(metric, budget))
