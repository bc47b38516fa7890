"""Optimizers and optimizer hooks of the plugin.

Importing this package registers ``--optimizer bert_adam`` (the CR-ILD authors' BertAdam) and
installs the weight-decay groups (no decay on biases and LayerNorm weights) for it and for
fairseq's own ``adam``; ``--decay-bias-and-norm`` switches the exemption off.
"""

from fairseq_crild.optim import param_groups
from fairseq_crild.optim.bert_adam import BertAdam, BertAdamConfig, FairseqBertAdam

param_groups.install()  # idempotent: Trainer tags, fp32-copy tags, adam groups and flag

__all__ = ["BertAdam", "BertAdamConfig", "FairseqBertAdam", "param_groups"]
