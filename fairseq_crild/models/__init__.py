"""This plugin's encoders: ``bert`` (archs bert_student, bert_hf_base...) and
``crild_roberta`` (RoBERTa's embeddings on the same transformer); importing the package
registers both. Besides the encoders: their checkpoint loading (``loading``, the conversions of
Hugging Face and fairseq RoBERTa weights) and ``convert``, the folder ``crild-convert`` writes
from a pretrained model (``pretrained`` locates the packaged ones)."""

from fairseq_crild.models import roberta  # noqa: F401  (registers crild_roberta)
from fairseq_crild.models.bert import BertConfig, BertModel  # noqa: F401
from fairseq_crild.models.requests import FeatureRequest, MixupSpec  # noqa: F401
