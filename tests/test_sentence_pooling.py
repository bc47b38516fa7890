"""--sentence-pooling mean: the head reads the masked mean of the last layer, no pooler."""

from types import SimpleNamespace

import pytest
import torch

from fairseq_crild.export.hf_classifier import check_representable
from fairseq_crild.export.onnx_export import OnnxClassifier
from fairseq_crild.export.student import ExportError
from fairseq_crild.models import BertConfig, BertModel, FeatureRequest

PAD = 1


def _model(pooling: str, seed: int = 0) -> BertModel:
    torch.manual_seed(seed)
    cfg = BertConfig(encoder_layers=2, encoder_embed_dim=16, encoder_attention_heads=2,
                     encoder_ffn_embed_dim=32, max_position_embeddings=32,
                     sentence_pooling=pooling, pooler_dropout=0.0)
    model = BertModel(cfg, vocab_size=20, padding_idx=PAD)
    model.register_classification_head("glue", num_classes=3)
    return model.eval()


TOKENS = torch.tensor([[0, 5, 6, 7, 2], [0, 8, 2, PAD, PAD]])


def test_mean_is_the_average_of_real_tokens_only():
    model = _model("mean")
    _, extra = model(TOKENS, request=FeatureRequest(hidden_states=True, pooled_output=True))
    last = extra["hidden_states"][-1]
    by_hand = torch.stack([last[0, :5].mean(0), last[1, :3].mean(0)])
    torch.testing.assert_close(extra["pooled_output"], by_hand)
    logits, _ = model(TOKENS, classification_head_name="glue")
    head = model.classification_heads["glue"].out_proj
    torch.testing.assert_close(logits, head(by_hand))


def test_more_padding_changes_nothing():
    model = _model("mean")
    padded = torch.cat([TOKENS, torch.full((2, 4), PAD)], dim=1)
    a, _ = model(TOKENS, classification_head_name="glue")
    b, _ = model(padded, classification_head_name="glue")
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_no_pooler_and_a_cls_checkpoint_still_loads():
    mean, cls = _model("mean", seed=1), _model("cls", seed=2)
    assert mean.pooler is None and not any(k.startswith("pooler.") for k in mean.state_dict())
    mean.load_state_dict(cls.state_dict())  # strict: the source's pooler is dropped
    for key, value in mean.state_dict().items():
        torch.testing.assert_close(value, cls.state_dict()[key])
    # the [CLS] model reads its pooler, the mean one does not: same body, other predictions
    assert not torch.allclose(mean(TOKENS, classification_head_name="glue")[0],
                              cls(TOKENS, classification_head_name="glue")[0])


def test_onnx_wrapper_pools_as_the_model():
    model = _model("mean")
    wrapper = OnnxClassifier(model, "glue").eval()
    types = torch.zeros_like(TOKENS)
    mask = TOKENS.ne(PAD).long()
    torch.testing.assert_close(wrapper(TOKENS, types, mask),
                               model(TOKENS, classification_head_name="glue")[0])


def test_hf_export_refuses_mean_pooling_with_the_way_out():
    clf = SimpleNamespace(checkpoint="student.pt", model=_model("mean"), head="glue",
                          input_format="bert")
    with pytest.raises(ExportError, match="student.pt.*--sentence-pooling mean.*ONNX"):
        check_representable(clf)
    check_representable(SimpleNamespace(checkpoint="s.pt", model=_model("cls"), head="glue",
                                        input_format="bert"))
