"""``kd``: prediction-layer distillation (pipeline stage 2).

loss = (1 - alpha) * KD + alpha * CE, KD = T^2 * soft cross-entropy to the frozen teacher's
logits at temperature T (MSE of logits / T for regression). The authors' scripts use T = 2
and alpha = 0 (no hard-label term), our defaults. Validation reports the task metrics.
Several teachers (``--teacher-path a.pt,b.pt --teacher-weights ...``): the soft labels are
the weighted average of the teachers' soft labels at T (regression: of their predictions).
"""


from dataclasses import dataclass, field
from typing import Dict, List, Tuple

import torch
import torch.nn.functional as F
from fairseq.criterions import FairseqCriterion, register_criterion
from fairseq.dataclass import FairseqDataclass
from fairseq.logging import metrics
from torch import Tensor

from fairseq_crild.criterions.contract import DistillTaskState, require
from fairseq_crild.criterions.glue_ce import supervised_loss
from fairseq_crild.criterions.glue_logging import (
    positive_class,
    prediction_stats,
    reduce_glue_metrics,
)
from fairseq_crild.data.logit_cache import TeacherLogitCache
from fairseq_crild.distill import losses
from fairseq_crild.distill.teacher import FrozenTeacher


def combine_teacher_logits(logits: List[Tensor], weights: List[float], temperature: float,
                           regression: bool) -> Tensor:
    """One logit tensor standing for several teachers, so the KD loss, the logit cache and
    the logs need not know how many there are.

    Classification: ``z = z_1 + T * log sum_k w_k exp(l_k - l_1)``, ``l_k =
    log_softmax(z_k / T)``, whose ``softmax(z / T)`` is exactly the weighted average
    ``sum_k w_k softmax(z_k / T)`` of the teachers' soft labels at temperature T (weights
    summing to 1). Regression: ``sum_k w_k z_k``. Computed in float64; teachers with equal
    logits give ``z_1`` back bit for bit, hence exactly the single-teacher loss.
    """
    if len(logits) != len(weights) or not logits:
        raise ValueError(f"{len(logits)} teacher outputs for {len(weights)} weights")
    if len(logits) == 1:
        return logits[0]
    first = logits[0]
    w = torch.tensor(weights, dtype=torch.float64, device=first.device)
    if regression:
        stacked = torch.stack([z.double() for z in logits])
        return (w.view(-1, *[1] * first.dim()) * stacked).sum(0).to(first.dtype)
    t = float(temperature)
    logp = torch.stack([F.log_softmax(z.double() / t, dim=-1) for z in logits])
    diff = logp - logp[0]
    top = diff.max(dim=0).values
    correction = top + torch.log((w.view(-1, *[1] * first.dim()) * torch.exp(diff - top)).sum(0))
    return (first.double() + t * correction).to(first.dtype)


@dataclass
class KdConfig(FairseqDataclass):
    temperature: float = field(default=2.0, metadata={"help": "softmax temperature T"})
    alpha: float = field(
        default=0.0, metadata={"help": "weight of the hard-label term; KD gets 1 - alpha"}
    )
    teacher_logit_cache: bool = field(
        default=False, metadata={"help": "compute the teacher's logits over the training split "
                                 "once, store them (keyed by teacher weights, data and "
                                 "--max-positions) and read them by example id in training "
                                 "steps instead of running the teacher; validation still "
                                 "runs the teacher"}
    )
    teacher_logit_cache_dir: str = field(
        default="", metadata={"help": "folder of the teacher-logit cache (default: "
                              "DATA/teacher_logits)"}
    )


@register_criterion("kd", dataclass=KdConfig)
class KdCriterion(FairseqCriterion):
    def __init__(self, task, temperature: float, alpha: float, teacher_logit_cache: bool = False,
                 teacher_logit_cache_dir: str = ""):
        require(task, DistillTaskState, "kd")
        super().__init__(task)
        self.task: DistillTaskState = task
        self.use_logit_cache, self.logit_cache_dir = teacher_logit_cache, teacher_logit_cache_dir
        self._logit_cache = None
        if temperature <= 0:
            raise ValueError(f"--temperature must be > 0, got {temperature}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"--alpha must lie in [0, 1], got {alpha}")
        self.temperature, self.alpha = temperature, alpha
        self.head = task.cfg.classification_head_name
        self.regression = task.regression
        self.num_classes = task.num_classes
        self.positive = positive_class(task.label_names, task.num_classes)

    def teacher_ensemble(self) -> Tuple[List[FrozenTeacher], List[float]]:
        """The teachers of --teacher-path with their normalised --teacher-weights."""
        return self.task.teachers, self.task.teacher_weights

    def teacher_logits(self, sample, like):
        """The teacher's logits; with several teachers, logits whose soft labels are the
        weighted average of theirs (:func:`combine_teacher_logits`)."""
        teachers, weights = self.teacher_ensemble()
        outputs: Dict[int, Tensor] = {}  # a checkpoint listed twice runs once
        for teacher in teachers:
            if id(teacher) not in outputs:
                teacher.follow(like.device, like.dtype)
                outputs[id(teacher)], _ = teacher(sample["net_input"], self.head)
        return combine_teacher_logits([outputs[id(t)] for t in teachers], weights,
                                      self.temperature, self.regression)

    def cached_teacher_logits(self, sample, like):
        """Training-split teacher logits from the cache (built on first use), by ``id``."""
        if self._logit_cache is None:
            fp32 = like.new_empty(0, dtype=torch.float32)  # the cache holds fp32 logits
            teachers, weights = self.teacher_ensemble()
            # several teachers: the combined logits also depend on the weights and T
            ensemble_key = ({"teacher_weights": weights, "temperature": self.temperature}
                            if len(teachers) > 1 else None)
            self._logit_cache = TeacherLogitCache.load_or_build(
                self.task, lambda net_input: self.teacher_logits({"net_input": net_input}, fp32),
                [t.model for t in teachers], self.logit_cache_dir, device=like.device,
                extra_key=ensemble_key)
        return self._logit_cache.lookup(sample["id"], like.device)

    def forward(self, model, sample, reduce: bool = True):
        logits, _ = model(**sample["net_input"], classification_head_name=self.head)
        if self.use_logit_cache and model.training:  # training batches come from "train"
            t_logits = self.cached_teacher_logits(sample, logits)
        else:
            t_logits = self.teacher_logits(sample, logits)
        if self.regression:
            kd = losses.kd_regression_loss(logits.view(-1), t_logits.view(-1), self.temperature)
        else:
            kd = losses.kd_loss(logits, t_logits, self.temperature)
        n = logits.size(0)
        loss = (1.0 - self.alpha) * kd * n
        log = {"loss_kd": kd.detach() * n}
        target = sample.get("target")
        if self.alpha > 0:
            if target is None:
                raise ValueError("--alpha > 0 needs labelled data")
            hard = supervised_loss(logits, target, self.regression)
            loss = loss + self.alpha * hard
            log["loss_hard"] = hard.detach()
        logging_output = {
            "loss": loss.data, "ntokens": sample["ntokens"], "nsentences": n, "sample_size": n,
            **log,
        }
        if target is not None:
            logging_output.update(prediction_stats(
                logits, target, self.regression, self.num_classes,
                keep_predictions=not model.training, positive=self.positive))
        return loss, n, logging_output

    def logging_outputs_can_be_summed(self) -> bool:
        return not self.regression

    @staticmethod
    def reduce_metrics(logging_outputs) -> None:
        n = max(sum(log.get("sample_size", 0) for log in logging_outputs), 1)
        for key in ("loss", "loss_kd", "loss_hard"):
            if any(key in log for log in logging_outputs):
                metrics.log_scalar(key, sum(float(log.get(key, 0)) for log in logging_outputs)
                                   / n, n, round=4)
        reduce_glue_metrics(logging_outputs)
