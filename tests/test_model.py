"""The bert model's contract: requests, mixup, heads, student initialisation."""

import pytest
import torch

from fairseq_crild.distill.student_init import copy_layers_into, select_source_layers
from fairseq_crild.models import BertConfig, BertModel, FeatureRequest, MixupSpec

PAD = 1


def _model(layers=2, dim=16, heads=2, seed=0):
    torch.manual_seed(seed)
    cfg = BertConfig(encoder_layers=layers, encoder_embed_dim=dim, encoder_attention_heads=heads,
                     encoder_ffn_embed_dim=2 * dim, max_position_embeddings=32)
    return BertModel(cfg, vocab_size=20, padding_idx=PAD).eval()


def _batch():
    tokens = torch.tensor([[0, 5, 6, 7, 2], [0, 8, 2, PAD, PAD], [0, 9, 10, 2, PAD]])
    types = torch.tensor([[0, 0, 0, 1, 1], [0, 0, 0, 0, 0], [0, 0, 1, 1, 0]])
    return tokens, types


def test_nothing_extra_unless_requested():
    model = _model()
    tokens, types = _batch()
    _, extra = model(tokens, token_type_ids=types)
    assert set(extra) == {"padding_mask"}
    _, extra = model(tokens, token_type_ids=types, request=FeatureRequest(
        hidden_states=True, qkv=frozenset({1}), attention_scores=frozenset({0})))
    assert len(extra["hidden_states"]) == 3
    assert set(extra["qkv"]) == {1} and set(extra["qkv"][1]) == {"q", "k", "v"}
    assert extra["qkv"][1]["q"].shape == (3, 5, 16)
    assert set(extra["attention_scores"]) == {0}
    assert extra["attention_scores"][0].shape == (3, 2, 5, 5)


def test_mixup_with_lambda_one_is_the_clean_forward_exactly():
    model = _model()
    tokens, types = _batch()
    req = dict(hidden_states=True, qkv=frozenset({0, 1}))
    clean, ce = model(tokens, token_type_ids=types, request=FeatureRequest(**req))
    # identity partner: bit-identical everywhere
    same, se = model(tokens, token_type_ids=types,
                     request=FeatureRequest(**req, mixup=MixupSpec(1.0, torch.arange(3))))
    assert torch.equal(clean, same)
    assert all(torch.equal(a, b) for a, b in zip(ce["hidden_states"], se["hidden_states"]))
    # a real partner: the mask is the union, so rows whose own tokens cover the partner's
    # (rows 0 and 1 here) are bit-identical too
    mixed, _ = model(tokens, token_type_ids=types,
                     request=FeatureRequest(**req, mixup=MixupSpec(1.0, torch.tensor([2, 1, 0]))))
    assert torch.equal(clean[:2], mixed[:2])


def test_mixup_mixes_embeddings_and_unions_masks():
    model = _model()
    tokens, types = _batch()
    partner = torch.tensor([2, 1, 0])
    lam = 0.7
    _, clean = model(tokens, token_type_ids=types, request=FeatureRequest(hidden_states=True))
    _, mixed = model(tokens, token_type_ids=types,
                     request=FeatureRequest(hidden_states=True, mixup=MixupSpec(lam, partner)))
    e = clean["hidden_states"][0]
    assert torch.allclose(mixed["hidden_states"][0], lam * e + (1 - lam) * e[partner])
    pad = tokens.eq(PAD)
    assert torch.equal(mixed["padding_mask"], pad & pad[partner])
    # the model mixes through the (tested) functions of models.requests, the one definition
    from fairseq_crild.models import requests

    assert torch.equal(mixed["hidden_states"][0], requests.mix_embeddings(e, partner, lam))
    assert torch.equal(mixed["padding_mask"], ~requests.mix_padding_mask(~pad, partner))


def test_heads_are_named_and_pooled():
    model = _model()
    model.register_classification_head("rte", num_classes=2)
    model.register_classification_head("stsb", num_classes=1)
    tokens, types = _batch()
    logits, extra = model(tokens, token_type_ids=types, classification_head_name="rte")
    assert logits.shape == (3, 2) and extra["pooled_output"].shape == (3, 16)
    assert model(tokens, classification_head_name="stsb")[0].shape == (3, 1)


def test_checkpoint_heads_are_reconciled():
    src = _model()
    src.register_classification_head("old", num_classes=3)
    sd = src.state_dict()
    del sd["pooler.weight"], sd["pooler.bias"]
    dst = _model(seed=1)
    dst.register_classification_head("new", num_classes=2)
    dst.load_state_dict(sd, strict=True)  # drops 'old', keeps 'new' and the pooler as they are
    assert torch.equal(dst.layers[0].fc1.weight, src.layers[0].fc1.weight)
    assert "classification_heads.old.out_proj.weight" not in dst.state_dict()


def test_student_init_copies_chosen_layers():
    teacher = _model(layers=6, seed=3)
    student = _model(layers=3, seed=4)
    layers = select_source_layers("uniform", 3, 6)
    assert layers == [1, 3, 5]
    copy_layers_into(student, teacher.state_dict(), layers)
    assert torch.equal(student.layers[2].fc2.weight, teacher.layers[5].fc2.weight)
    assert torch.equal(student.embeddings.word_embeddings.weight,
                       teacher.embeddings.word_embeddings.weight)
    assert select_source_layers("first", 3, 6) == [0, 1, 2]
    assert select_source_layers("0,2,4", 3, 6) == [0, 2, 4]
    with pytest.raises(ValueError, match="do not exist"):
        select_source_layers("0,2,9", 3, 6)
    with pytest.raises(ValueError, match="width"):
        copy_layers_into(_model(layers=3, dim=8), teacher.state_dict(), [0, 1, 2])
