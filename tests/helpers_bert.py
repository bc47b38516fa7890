"""Shared builders for tests: tiny HF BERT folders and sentence pairs."""

from __future__ import annotations

import csv
import os
from typing import List, Tuple

GLUE_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "glue")

TINY_WORDS = [
    "the", "a", "cat", "dog", "sat", "on", "mat", "is", "was", "not", "big", "small", "runs",
    "##s", "##ing", "##ed", "he", "she", "it", "and", "or", "to", "of", "in", ".", ",", "?",
]
SPECIALS = ["[PAD]", "[unused0]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def write_vocab(path: str, extra: int = 0) -> List[str]:
    vocab = SPECIALS + TINY_WORDS + [f"w{i}" for i in range(extra)]
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(t + "\n" for t in vocab)
    return vocab


def make_tiny_hf_folder(path: str, layers: int = 2, hidden: int = 32, heads: int = 4,
                        seed: int = 0, with_classifier: int = 0) -> str:
    """A random tiny BERT saved by transformers itself (config, safetensors, vocab.txt)."""
    import torch
    import transformers

    os.makedirs(path, exist_ok=True)
    vocab = write_vocab(os.path.join(path, "vocab.txt"))
    cfg = transformers.BertConfig(
        vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=layers,
        num_attention_heads=heads, intermediate_size=hidden * 2, max_position_embeddings=64,
        num_labels=max(with_classifier, 2),
    )
    torch.manual_seed(seed)
    cls = transformers.BertForSequenceClassification if with_classifier else transformers.BertModel
    model = cls(cfg)
    with torch.no_grad():  # non-trivial LayerNorm/bias values so the mapping is really tested
        for name, p in model.named_parameters():
            if "LayerNorm" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
    model.save_pretrained(path)
    return path


def rte_pairs(n: int = 6) -> List[Tuple[str, str]]:
    """Real sentence pairs from GLUE RTE dev when available, else fixed sentences."""
    path = os.path.join(GLUE_DIR, "RTE", "dev.tsv")
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[1:]
        return [(r[1], r[2]) for r in rows[:n]]
    return [("The cat sat on the mat.", "A cat is sitting."),
            ("He runs to the big dog.", "She was not small, and it ran?")] * (n // 2)


def load_pure_module(name: str):
    """Loads fairseq_crild/<name>.py (``name`` dotted below the package, e.g.
    ``distill.losses``) straight from its file, bypassing the package __init__ (which imports
    fairseq): proves the module itself needs no fairseq."""
    import importlib.util
    import sys
    from pathlib import Path

    *folders, stem = name.split(".")
    path = Path(__file__).resolve().parents[1].joinpath("fairseq_crild", *folders, f"{stem}.py")
    spec = importlib.util.spec_from_file_location(f"_crild_pure_{'_'.join(folders + [stem])}",
                                                  path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return module


TOY_VOCAB = 30  # [CLS] [PAD] [SEP] [UNK] + w0..w25: the criterion tests' in-memory models


def toy_dictionary():
    """The fairseq dictionary of :data:`TOY_VOCAB` symbols the in-memory models index."""
    from fairseq.data import Dictionary

    d = Dictionary(bos="[CLS]", pad="[PAD]", eos="[SEP]", unk="[UNK]")
    for i in range(TOY_VOCAB - 4):
        d.add_symbol(f"w{i}")
    return d


def toy_bert(layers: int, dim: int = 16, heads: int = 2, seed: int = 0, dropout: float = 0.0,
             dropout_impl: str = "torch"):
    """A seeded in-memory BertModel with a 2-class ``glue`` head (no checkpoint, no task)."""
    import torch

    from fairseq_crild.models import BertConfig, BertModel

    torch.manual_seed(seed)
    cfg = BertConfig(encoder_layers=layers, encoder_embed_dim=dim, encoder_attention_heads=heads,
                     encoder_ffn_embed_dim=2 * dim, max_position_embeddings=32, dropout=dropout,
                     attention_dropout=dropout, pooler_dropout=0.0, dropout_impl=dropout_impl)
    model = BertModel(cfg, TOY_VOCAB, 1)
    model.register_classification_head("glue", num_classes=2)
    return model
