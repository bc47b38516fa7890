"""Session fixtures: a tiny converted BERT and a small binarised RTE built from real rows."""

import os
import re
import subprocess
import sys

import pytest

from tests.helpers_bert import GLUE_DIR

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SYNTHETIC = [
    ("The cat sat on the mat.", "A cat is on a mat.", "entailment"),
    ("He did not go to school today.", "He went to school today.", "not_entailment"),
    ("Paris is the capital of France.", "France has a capital.", "entailment"),
    ("The dog runs in the park every morning.", "The dog sleeps all day.", "not_entailment"),
]


def write_rte_slice(folder: str, n_train: int = 48, n_dev: int = 24) -> None:
    """RTE-layout files: the first rows of the real RTE if present, else synthetic ones."""
    os.makedirs(folder, exist_ok=True)
    real = os.path.join(GLUE_DIR, "RTE")
    for split, n in (("train", n_train), ("dev", n_dev), ("test", 8)):
        path = os.path.join(real, f"{split}.tsv")
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                lines = f.readlines()[: n + 1]
        else:
            header = "index\tsentence1\tsentence2" + ("" if split == "test" else "\tlabel")
            rows = [SYNTHETIC[i % 4] for i in range(n)]
            lines = [header + "\n"] + [
                f"{i}\t{a}\t{b}" + ("" if split == "test" else f"\t{y}") + "\n"
                for i, (a, b, y) in enumerate(rows)]
        with open(os.path.join(folder, f"{split}.tsv"), "w", encoding="utf-8") as f:
            f.writelines(lines)


def vocab_for(folder: str) -> list:
    words = set()
    for name in os.listdir(folder):
        with open(os.path.join(folder, name), encoding="utf-8") as f:
            for line in f:
                words.update(re.findall(r"\w+|[^\w\s]", line.lower()))
    return ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(words)


def run_script(*args, check=True, **kwargs):
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                          **kwargs)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
                             f"{proc.stderr[-5000:]}")
    return proc


@pytest.fixture(scope="session")
def tiny_env(tmp_path_factory):
    """{glue, hf, ckpt (converted tiny 4-layer BERT), data (binarised RTE slice)}."""
    import torch
    import transformers

    base = tmp_path_factory.mktemp("tiny")
    glue = base / "glue"
    write_rte_slice(str(glue / "RTE"))
    hf = base / "hf"
    hf.mkdir()
    vocab = vocab_for(str(glue / "RTE"))
    (hf / "vocab.txt").write_text("".join(t + "\n" for t in vocab), encoding="utf-8")
    cfg = transformers.BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=4,
                                  num_attention_heads=4, intermediate_size=64,
                                  max_position_embeddings=128)
    torch.manual_seed(0)
    transformers.BertModel(cfg).save_pretrained(str(hf))
    ckpt = base / "ckpt"
    run_script("scripts/convert_hf_bert.py", str(hf), str(ckpt))
    data = base / "data-bin"
    run_script("scripts/prepare_glue.py", "--glue-dir", str(glue), "--task", "RTE", "--dict",
               str(ckpt / "dict.txt"), "--out", str(data))
    return {"base": base, "glue": glue, "hf": hf, "ckpt": ckpt, "data": data}
