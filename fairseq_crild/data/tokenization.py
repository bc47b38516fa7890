"""BERT WordPiece tokenisation (the ``tokenizers`` library) straight into dictionary ids.

The tokenizer's vocabulary maps every symbol to its index in the fairseq dictionary (see
:mod:`fairseq_crild.data.dictionary`), so the ids it returns are the ids the model embeds: no
string round trip, no re-numbering. Normalisation and pre-tokenisation are BERT's own
(BertNormalizer + BertPreTokenizer, as HF's fast BERT tokenizer does), so ids match what the
HF teacher saw. No special tokens are added: the task adds [CLS]/[SEP] when it pairs and
truncates sentences.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional, Sequence

from fairseq.data import Dictionary
from tokenizers import BertWordPieceTokenizer

from fairseq_crild.data.dictionary import UNK


def build_tokenizer(dictionary: Dictionary, lowercase: bool = True) -> BertWordPieceTokenizer:
    """A WordPiece tokenizer whose ids are ``dictionary`` indices. ``lowercase`` must match
    the model (all-MiniLM-L6-v2 and bert-base-uncased: True); accents are stripped iff
    lower-casing, as in HF BERT."""
    vocab = {dictionary[i]: i for i in range(len(dictionary))}
    if len(vocab) != len(dictionary):
        raise ValueError("dictionary lists a symbol twice; cannot build a WordPiece vocabulary")
    return BertWordPieceTokenizer(vocab, unk_token=UNK, lowercase=lowercase, clean_text=True,
                                  handle_chinese_chars=True, strip_accents=None,
                                  wordpieces_prefix="##")


def encode_texts(tokenizer: BertWordPieceTokenizer, texts: Sequence[str]) -> List[List[int]]:
    """Ids of each text without [CLS]/[SEP] (an empty text gives an empty list).

    Uses ``encode_batch``: the Rust side tokenises in parallel (see :func:`set_workers`).
    """
    if not texts:
        return []
    return [enc.ids for enc in tokenizer.encode_batch(list(texts), add_special_tokens=False)]


def set_workers(workers: Optional[int]) -> None:
    """Caps the tokenizer's threads: ``RAYON_NUM_THREADS=N`` (``TOKENIZERS_PARALLELISM=false``
    for 1). Rayon reads it when its thread pool starts, i.e. at the first parallel call of
    the process: set it before tokenising anything. ``None`` leaves the defaults (all cores).
    """
    if workers is None:
        return
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    os.environ["RAYON_NUM_THREADS"] = str(workers)
    os.environ["TOKENIZERS_PARALLELISM"] = "false" if workers == 1 else "true"


def read_tokenizer_config(dict_path: str) -> Dict[str, Any]:
    """The tokenizer_config.json next to dict.txt (convert_hf_bert.py writes one), or {}
    when there is none or it is unreadable."""
    path = os.path.join(os.path.dirname(os.path.abspath(dict_path)), "tokenizer_config.json")
    if not os.path.isfile(path):
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, ValueError):
        return {}
    return config if isinstance(config, dict) else {}


def read_lowercase_setting(dict_path: str) -> Optional[bool]:
    """``do_lower_case`` of the tokenizer_config.json next to dict.txt, or None."""
    value = read_tokenizer_config(dict_path).get("do_lower_case")
    return None if value is None else bool(value)
