"""BERT WordPiece vocabularies as fairseq dictionaries.

fairseq's Dictionary reserves indices 0..3 for bos/pad/eos/unk. We give those roles to
BERT's own symbols ([CLS], [PAD], [SEP], [UNK]) so that ``dict.bos()`` is [CLS] and
``dict.eos()`` is [SEP]; every other WordPiece keeps its relative order. Converters permute
embedding rows accordingly (see :func:`hf_to_fairseq_order`).
"""

from __future__ import annotations

import os
from typing import Dict, List, Sequence

from fairseq.data import Dictionary

CLS, PAD, SEP, UNK, MASK = "[CLS]", "[PAD]", "[SEP]", "[UNK]", "[MASK]"
BERT_SPECIALS = (CLS, PAD, SEP, UNK)


def new_bert_dictionary() -> Dictionary:
    """An empty dictionary whose four reserved symbols are BERT's."""
    return Dictionary(bos=CLS, pad=PAD, eos=SEP, unk=UNK)


def dictionary_from_vocab(vocab: Sequence[str]) -> Dictionary:
    """Builds the fairseq dictionary for a BERT ``vocab.txt`` token list (in HF id order)."""
    missing = [s for s in BERT_SPECIALS if s not in vocab]
    if missing:
        raise ValueError(f"vocabulary lacks BERT special tokens {missing}")
    d = new_bert_dictionary()
    for tok in vocab:
        if tok in BERT_SPECIALS:
            continue
        if tok in d.indices:
            raise ValueError(f"vocabulary lists {tok!r} twice")
        d.add_symbol(tok, n=1)
    return d


def load_bert_dictionary(path: str) -> Dictionary:
    """Loads a ``dict.txt`` written by :func:`save_bert_dictionary` (or by the converter).

    Anything else (a checkpoint, a vocab.txt, a binary file) raises one ValueError that says
    what the file looks like, instead of fairseq's bare exceptions."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"dictionary not found: {path}")
    d = new_bert_dictionary()
    try:
        d.add_from_file(path)
    except Exception as err:  # fairseq raises bare Exception, ValueError and RuntimeError
        raise ValueError(f"{path}: {describe_non_dictionary(path, err)}; pass the dict.txt "
                         "written by convert_hf_bert.py (next to its model.pt)") from None
    return d


def describe_non_dictionary(path: str, err: Exception) -> str:
    """Why ``path`` is not a text dict.txt (``<symbol> <count> [#fairseq:overwrite]`` lines),
    in a few words: what it looks like, not fairseq's wording."""
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    if head.startswith(b"PK\x03\x04"):
        return "not a text dictionary but a zip archive (a PyTorch checkpoint such as model.pt?)"
    if head[:1] == b"\x80":
        return "not a text dictionary but a pickle (an old-style PyTorch checkpoint?)"
    if b"\x00" in head:
        return "not a text dictionary but a binary file"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as u:
        if u.start < len(head) - 4:  # not just a character cut at the end of the sample
            return f"not a text dictionary: not UTF-8 (byte {u.start})"
        text = head[:u.start].decode("utf-8")
    for lineno, line in enumerate(text.splitlines(), start=1):
        fields = line.rstrip().rsplit(" ", 2)
        counts = [f for f in fields[1:] if f.lstrip("-").isdigit()]
        if len(fields) < 2 or not counts:
            hint = " (a vocab.txt, one token per line?)" if len(fields) == 1 else ""
            return (f"line {lineno} is not '<symbol> <count>'{hint}: not a fairseq dict.txt")
    message = str(err).splitlines()[0] if str(err) else type(err).__name__
    return f"not a fairseq dict.txt ({message[:200]})"


def save_bert_dictionary(d: Dictionary, path: str) -> None:
    d.save(path)


def hf_to_fairseq_order(vocab: Sequence[str], d: Dictionary) -> List[int]:
    """``perm[i]`` = HF vocabulary id of fairseq symbol ``i`` (gather rows with it)."""
    hf_index: Dict[str, int] = {tok: i for i, tok in enumerate(vocab)}
    return [hf_index[d[i]] for i in range(len(d))]


def read_vocab_txt(path: str) -> List[str]:
    """Reads a WordPiece ``vocab.txt`` (one token per line, id = line number)."""
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n").rstrip("\r") for line in f]


def vocab_fingerprint(d: Dictionary) -> str:
    """sha256 of the ordered symbol list: equal iff two models index tokens identically."""
    import hashlib

    h = hashlib.sha256()
    for i in range(len(d)):
        h.update(d[i].encode("utf-8") + b"\n")
    return h.hexdigest()
