"""``glue_ce``: fine-tuning on GLUE labels (cross-entropy; MSE for regression such as STS-B).

Used to fine-tune the teacher (pipeline step 0) and the "fine-tuned student alone" baseline.
"""


from dataclasses import dataclass

import torch.nn.functional as F
from fairseq.criterions import FairseqCriterion, register_criterion
from fairseq.dataclass import FairseqDataclass
from fairseq.logging import metrics

from fairseq_crild.criterions.contract import GlueTaskState, require
from fairseq_crild.criterions.glue_logging import (
    positive_class,
    prediction_stats,
    reduce_glue_metrics,
)


@dataclass
class GlueCeConfig(FairseqDataclass):
    pass


def supervised_loss(logits, target, regression: bool):
    """Summed loss over the batch (fairseq divides by sample_size = number of sentences)."""
    if regression:
        return F.mse_loss(logits.view(-1).float(), target.float(), reduction="sum")
    return F.cross_entropy(logits.float(), target, reduction="sum")


@register_criterion("glue_ce", dataclass=GlueCeConfig)
class GlueCrossEntropyCriterion(FairseqCriterion):
    def __init__(self, task):
        require(task, GlueTaskState, "glue_ce")
        super().__init__(task)
        self.head = task.cfg.classification_head_name
        self.regression = task.regression
        self.num_classes = task.num_classes
        self.positive = positive_class(task.label_names, task.num_classes)

    def forward(self, model, sample, reduce: bool = True):
        logits, _ = model(**sample["net_input"], classification_head_name=self.head)
        target = sample["target"]
        loss = supervised_loss(logits, target, self.regression)
        sample_size = target.numel()
        logging_output = {
            "loss": loss.data,
            "ntokens": sample["ntokens"],
            "nsentences": sample_size,
            "sample_size": sample_size,
            **prediction_stats(logits, target, self.regression, self.num_classes,
                               keep_predictions=not model.training, positive=self.positive),
        }
        return loss, sample_size, logging_output

    def logging_outputs_can_be_summed(self) -> bool:
        # regression validation carries prediction tensors (for Spearman): gather, don't sum
        return not self.regression

    @staticmethod
    def reduce_metrics(logging_outputs) -> None:
        loss_sum = sum(log.get("loss", 0) for log in logging_outputs)
        sample_size = sum(log.get("sample_size", 0) for log in logging_outputs)
        # per example, in nats (cross-entropy) or squared units (MSE)
        metrics.log_scalar("loss", loss_sum / max(sample_size, 1), sample_size, round=4)
        reduce_glue_metrics(logging_outputs)
