from fairseq_crild.models.bert import BertConfig, BertModel  # noqa: F401
from fairseq_crild.models.requests import FeatureRequest, MixupSpec  # noqa: F401
