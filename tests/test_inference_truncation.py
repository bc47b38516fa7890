"""Inference truncates where training did: at the checkpoint's training --max-positions.

A student with a 256-row position table is trained (2 real fairseq-train updates) at
--max-positions 128 on pairs longer than 128 word pieces. The hub, classify.py,
predict_glue.py and the Hugging Face export must then give the logits of the binarised dev
evaluation at 128, not at the position table (the old behaviour, which these tests tell apart).
"""

import json
import os

import pytest
import torch

from fairseq_crild.data.tokenization import encode_texts
from fairseq_crild.export.hub import GlueClassifier
from fairseq_crild.export.inference_length import inference_max_positions, trained_max_positions
from fairseq_crild.models.loading import load_bert, read_checkpoint
from fairseq_crild.tasks.distill_glue import DistillGlueConfig, DistillGlueTask
from tests.conftest import run_script
from tests.helpers_export import one_thread  # noqa: F401  (autouse)

TRAINED, TABLE = 128, 256


def _long_pairs(tiny_env, n=10):
    """Pairs of 130-400 word pieces made of the slice's own sentences (so no [UNK]; real RTE
    rows or the synthetic ones): a long first sentence, a short or long second one
    (longest-first then cuts one or both)."""
    import csv

    with open(tiny_env["glue"] / "RTE" / "train.tsv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    s1, s2 = [r["sentence1"] for r in rows], [r["sentence2"] for r in rows]

    def text(start, words):  # sentences from ``start`` on until at least ``words`` words
        out, k = [], start
        while sum(len(x.split()) for x in out) < words:
            out.append(s1[k % len(s1)])
            k += 1
        return " ".join(out)

    pairs = []
    for i in range(n):
        a = text(i, 130 + 60 * (i % 3))
        b = s2[i % len(s2)] if i % 2 == 0 else text(i + 7, 70)
        pairs.append((a, b, "entailment" if i % 2 else "not_entailment"))
    return pairs


@pytest.fixture(scope="module")
def long_env(tiny_env):
    """{data: binarised RTE folder of long pairs, ckpt: glue_ce student trained at 128}."""
    base = tiny_env["base"] / "truncation"
    glue = base / "glue" / "RTE"
    glue.mkdir(parents=True, exist_ok=True)
    pairs = _long_pairs(tiny_env)
    for split in ("train", "dev", "test"):
        with open(glue / f"{split}.tsv", "w", encoding="utf-8") as f:
            f.write("index\tsentence1\tsentence2" + ("" if split == "test" else "\tlabel")
                    + "\n")
            for i, (a, b, y) in enumerate(pairs):
                f.write(f"{i}\t{a}\t{b}" + ("" if split == "test" else f"\t{y}") + "\n")
    data = base / "data-bin"
    run_script("scripts/prepare_glue.py", "--glue-dir", str(base / "glue"), "--task", "RTE",
               "--dict", str(tiny_env["ckpt"] / "dict.txt"), "--out", str(data))
    save = base / "student"
    run_script("-m", "fairseq_cli.train", str(data), "--user-dir", "fairseq_crild",
               "--task", "distill_glue", "--arch", "bert_tiny", "--max-position-embeddings",
               str(TABLE), "--max-positions", str(TRAINED), "--criterion", "glue_ce", "--cpu",
               "--num-workers", "0", "--optimizer", "adam", "--lr", "1e-3", "--batch-size", "4",
               "--max-update", "2", "--no-epoch-checkpoints", "--disable-validation",
               "--save-dir", str(save), "--seed", "1",
               env={**os.environ, "OMP_NUM_THREADS": "1"})
    # 2 updates leave logits near a constant (0.008, -0.008) whatever the input: scale the
    # head and centre its outputs so that truncation effects stand far above float noise and
    # probabilities are not saturated (the saved training config stays as fairseq wrote it)
    ckpt = save / "checkpoint_last.pt"
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    head = "classification_heads.glue.out_proj."
    state["model"][head + "weight"] *= 1000.0
    state["model"][head + "bias"] *= 1000.0
    torch.save(state, ckpt)
    env = {"data": data, "ckpt": ckpt}
    state["model"][head + "bias"] -= dev_logits(env, TRAINED).mean(0)
    torch.save(state, ckpt)
    return {"data": data, "ckpt": ckpt,
            "pairs": [(a, b) for a, b, _ in pairs]}


@torch.inference_mode()
def dev_logits(env, max_positions):
    """The binarised dev evaluation's logits (the task's own pairing and truncation)."""
    task = DistillGlueTask.setup_task(DistillGlueConfig(data=str(env["data"]),
                                                        max_positions=max_positions))
    model, _ = load_bert(str(env["ckpt"]), task.dictionary)
    model.eval()
    task.load_dataset("valid")
    ds = task.dataset("valid")
    batch = ds.collater([ds[i] for i in range(len(ds))])
    logits, _ = model(**batch["net_input"], classification_head_name="glue")
    return logits[batch["id"].argsort()]


def reference_ids(a, b, budget, cls, sep):
    """BERT's longest-first truncation, one token at a time (plain Python): drop the last
    token of the longer sentence, of the second one on ties, until both fit ``budget - 3``."""
    a, b = list(a), list(b)
    while len(a) + len(b) > budget - 3:
        if len(a) > len(b):
            a.pop()
        else:
            b.pop()
    return [cls] + a + [sep] + b + [sep]


def test_checkpoint_records_its_training_length(long_env):
    state = read_checkpoint(str(long_env["ckpt"]))
    assert trained_max_positions(state) == TRAINED
    assert inference_max_positions(state, TABLE) == TRAINED
    assert inference_max_positions(state, TABLE, 200) == 200
    with pytest.raises(ValueError, match=r"--max-positions 300 exceeds .*at most 256"):
        inference_max_positions(state, TABLE, 300)
    assert inference_max_positions({"model": {}}, TABLE) == TABLE  # nothing saved: the table


def test_hub_logits_equal_the_dev_evaluation_at_the_training_length(long_env):
    clf = GlueClassifier.from_pretrained(str(long_env["ckpt"]),
                                         data_name_or_path=str(long_env["data"]))
    assert clf.max_positions == TRAINED
    pairs = long_env["pairs"]

    # the ids fed to the model: a hand truncation of the tokenizer's word pieces
    d = clf.task.dictionary
    ds = clf._dataset(pairs)
    a_ids = encode_texts(clf.tokenizer, [a for a, _ in pairs])
    b_ids = encode_texts(clf.tokenizer, [b for _, b in pairs])
    longer = 0
    for i, (a, b) in enumerate(zip(a_ids, b_ids)):
        want = reference_ids(a, b, TRAINED, d.bos(), d.eos())
        assert ds[i]["source"].tolist() == want
        longer += len(a) + len(b) + 3 > TRAINED
    assert longer == len(pairs)  # every pair is cut: the test can tell 128 from 256
    assert any(len(a) + len(b) + 3 > TABLE for a, b in zip(a_ids, b_ids))

    ours = clf.logits(pairs, batch_size=3)
    at_128, at_256 = dev_logits(long_env, TRAINED), dev_logits(long_env, TABLE)
    assert at_128.abs().max() > 0.1  # logits vary with the input (see long_env)
    assert torch.allclose(ours, at_128, atol=1e-4), (ours - at_128).abs().max()
    assert (at_256 - at_128).abs().max() > 1e-2  # the table's length would give other logits

    wider = GlueClassifier.from_pretrained(str(long_env["ckpt"]), max_positions=TABLE,
                                           data_name_or_path=str(long_env["data"]))
    assert torch.allclose(wider.logits(pairs), at_256, atol=1e-4)
    with pytest.raises(ValueError, match="exceeds the position table"):
        GlueClassifier.from_pretrained(str(long_env["ckpt"]), max_positions=TABLE + 1,
                                       data_name_or_path=str(long_env["data"]))


def _probs(stdout):
    return [[float(x.split("=")[1]) for x in line.split("\t")[1:]]
            for line in stdout.splitlines()]


def test_classify_cli_truncates_at_the_training_length(long_env):
    pairs = long_env["pairs"][:4]
    stdin = "".join(f"{a}\t{b}\n" for a, b in pairs)
    args = ["scripts/classify.py", str(long_env["ckpt"]), "--data", str(long_env["data"]),
            "--probs"]
    wants = []
    for extra, length in (([], TRAINED), (["--max-positions", str(TABLE)], TABLE)):
        proc = run_script(*args, *extra, input=stdin)
        wants.append(dev_logits(long_env, length)[:4].softmax(-1))
        assert torch.allclose(torch.tensor(_probs(proc.stdout)), wants[-1], atol=1e-4)
    assert (wants[0] - wants[1]).abs().max() > 1e-3  # the two lengths print different figures
    bad = run_script(*args, "--max-positions", "999", input=stdin, check=False)
    assert bad.returncode == 2 and "exceeds the position table" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_predict_glue_truncates_at_the_training_length(long_env):
    from fairseq_crild.export.hub import predict_split

    task, preds = predict_split(str(long_env["ckpt"]), str(long_env["data"]), "valid")
    assert task.cfg.max_positions == TRAINED
    ds = task.dataset("valid")
    assert max(len(ds[i]["source"]) for i in range(len(ds))) == TRAINED
    want = dev_logits(long_env, TRAINED).argmax(-1).tolist()
    assert preds == [task.label_names[i] for i in want]
    task, _ = predict_split(str(long_env["ckpt"]), str(long_env["data"]), "valid",
                            max_positions=TABLE)
    assert task.dataset("valid").max_positions == TABLE


def test_hf_export_tokenizer_truncates_at_the_training_length(long_env, tmp_path, capsys):
    transformers = pytest.importorskip("transformers")
    import scripts.export_hf_classifier as export
    from fairseq_crild.export.onnx_export import metadata
    from fairseq_crild.export.student import load_classifier, real_batches

    out = tmp_path / "hf"
    assert export.main([str(long_env["ckpt"]), str(out), "--data", str(long_env["data"])]) == 0
    capsys.readouterr()
    tok_cfg = json.loads((out / "tokenizer_config.json").read_text())
    assert tok_cfg["model_max_length"] == TRAINED
    assert json.loads((out / "config.json").read_text())["max_position_embeddings"] == TABLE

    # transformers alone, on raw text, with truncation=True and no max_length
    tok = transformers.BertTokenizer.from_pretrained(str(out))
    hf = transformers.BertForSequenceClassification.from_pretrained(str(out)).eval()
    pairs = long_env["pairs"]
    batch = tok([a for a, _ in pairs], [b for _, b in pairs], padding=True, truncation=True,
                return_tensors="pt")
    assert batch["input_ids"].shape[1] == TRAINED
    with torch.no_grad():
        theirs = hf(**batch).logits
    assert torch.allclose(theirs, dev_logits(long_env, TRAINED), atol=1e-4)

    # the parity batches and the ONNX metadata use the same length; the option changes it
    clf = load_classifier(str(long_env["ckpt"]), data=str(long_env["data"]))
    assert max(b["input_ids"].shape[1] for b in real_batches(clf, str(long_env["data"]))) \
        == TRAINED
    assert metadata(clf)["model_max_length"] == str(TRAINED)
    clf = load_classifier(str(long_env["ckpt"]), data=str(long_env["data"]), max_positions=200)
    assert clf.input_length == 200
