"""BERT WordPiece tokenisation (the ``tokenizers`` library) straight into dictionary ids.

The tokenizer's vocabulary maps every symbol to its index in the fairseq dictionary, so the
ids it returns are the ids the model embeds: no string round trip, no re-numbering.
"""

from __future__ import annotations

import json
import os
from typing import List, Optional, Sequence

from fairseq.data import Dictionary
from tokenizers import BertWordPieceTokenizer

from fairseq_crild.dictionary import UNK


def read_lowercase_setting(dict_path: str) -> Optional[bool]:
    """``do_lower_case`` from the tokenizer_config.json written next to dict.txt, if any."""
    path = os.path.join(os.path.dirname(os.path.abspath(dict_path)), "tokenizer_config.json")
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        value = json.load(f).get("do_lower_case")
    return None if value is None else bool(value)


def build_tokenizer(dictionary: Dictionary, lowercase: bool) -> BertWordPieceTokenizer:
    vocab = {dictionary[i]: i for i in range(len(dictionary))}
    return BertWordPieceTokenizer(vocab, unk_token=UNK, lowercase=lowercase, clean_text=True,
                                  handle_chinese_chars=True, strip_accents=None)


def encode_texts(tokenizer: BertWordPieceTokenizer, texts: Sequence[str]) -> List[List[int]]:
    """Ids of each text, without [CLS]/[SEP] (the task adds them when it pairs sentences)."""
    if not texts:
        return []
    return [enc.ids for enc in tokenizer.encode_batch(list(texts), add_special_tokens=False)]
