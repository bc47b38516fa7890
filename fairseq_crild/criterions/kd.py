"""``kd``: prediction-layer distillation (pipeline stage 2).

loss = (1 - alpha) * KD + alpha * CE, KD = T^2 * soft cross-entropy to the frozen teacher's
logits at temperature T (MSE of logits / T for regression). The authors' scripts use T = 2
and alpha = 0 (no hard-label term), our defaults. Validation reports the task metrics.
"""


from dataclasses import dataclass, field

from fairseq.criterions import FairseqCriterion, register_criterion
from fairseq.dataclass import FairseqDataclass
from fairseq.logging import metrics

from fairseq_crild import losses
from fairseq_crild.criterions.glue_ce import supervised_loss
from fairseq_crild.criterions.glue_logging import prediction_stats, reduce_glue_metrics


@dataclass
class KdConfig(FairseqDataclass):
    temperature: float = field(default=2.0, metadata={"help": "softmax temperature T"})
    alpha: float = field(
        default=0.0, metadata={"help": "weight of the hard-label term; KD gets 1 - alpha"}
    )


@register_criterion("kd", dataclass=KdConfig)
class KdCriterion(FairseqCriterion):
    def __init__(self, task, temperature: float, alpha: float):
        super().__init__(task)
        if temperature <= 0:
            raise ValueError(f"--temperature must be > 0, got {temperature}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"--alpha must lie in [0, 1], got {alpha}")
        self.temperature, self.alpha = temperature, alpha
        self.head = task.cfg.classification_head_name
        self.regression = task.regression
        self.num_classes = task.num_classes

    def teacher_logits(self, sample, like):
        teacher = self.task.teacher
        teacher.follow(like.device, like.dtype)
        logits, _ = teacher(sample["net_input"], self.head)
        return logits

    def forward(self, model, sample, reduce: bool = True):
        logits, _ = model(**sample["net_input"], classification_head_name=self.head)
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
                keep_predictions=not model.training))
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
