"""A prepared folder's ``meta.json`` as one typed object, read and written in one place.

``crild-prepare`` and ``crild-prepare-roberta`` write it; the task, the teacher and data
checks, the exports, the hub and the pipeline read it. :class:`GlueMeta` names the keys they
read, with the meaning a missing key has always had (no ``input_format``: BERT layout; no
``lowercase``: lower-cased; ...). Every other key (``sources``, ``dict_sha256``, ``tool``,
``fairseq_sentence_prediction``, keys of a newer version, ...) is kept as read in
:attr:`GlueMeta.extra`, and the order of the keys is kept too, so a folder written by an older
or newer version reads and writes back unchanged, and the writers' bytes are what they were
before this type existed.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

from fairseq_crild.errors import CrildError

META_FILE = "meta.json"


class MetaFormatError(CrildError, ValueError):
    """A meta.json whose content is not what a prepared folder records (names file and key)."""


def _str_tuple(value: Any) -> Tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TypeError("a list of strings")
    return tuple(value)


def _optional(kind: type, what: str) -> Callable[[Any], Any]:
    """A check of a value that is ``kind`` or null (JSON true/false are not integers)."""

    def check(value: Any) -> Any:
        if value is not None and (not isinstance(value, kind)
                                  or (isinstance(value, bool) and kind is not bool)):
            raise TypeError(what)
        return value

    return check


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError("true or false")
    return value


def _number(value: Any) -> Optional[float]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError("a number")
    return value


def _splits(value: Any) -> Mapping[str, int]:
    if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool)
            for k, v in value.items()):
        raise TypeError("an object of split name -> number of examples")
    return MappingProxyType(dict(value))


@dataclass(frozen=True)
class GlueMeta:
    """What a prepared GLUE folder records about itself (its ``meta.json``).

    Defaults are the meaning of a key that is absent. ``extra`` holds every key this type
    does not name, as read; :meth:`to_json` writes the keys back in the order they were read.
    """

    task: Optional[str] = None  # the GLUE task's name (RTE, STS-B, PAIRS, ...)
    input_format: Optional[str] = None  # "roberta" (prepare_glue_roberta), else BERT layout
    label_names: Tuple[str, ...] = ()  # class i is label_names[i]; () for regression
    regression: Optional[bool] = None  # None: not recorded (readers fall back to the task)
    num_classes: Optional[int] = None  # 1 for regression
    metrics: Tuple[str, ...] = ()
    main_metric: Optional[str] = None
    is_pair: bool = False  # sentence pairs (input1/ present)
    lowercase: bool = True  # the WordPiece tokenizer lower-cases (BERT folders record it)
    bpe: Optional[str] = None  # RoBERTa folders: the BPE their text was encoded with
    vocab_sha256: Optional[str] = None  # the dictionary's fingerprint (vocab_fingerprint)
    vocab_size: Optional[int] = None
    unk_rate: Optional[float] = None  # share of unknown word pieces / tokens
    splits: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    labelled_splits: Tuple[str, ...] = ()
    missing_splits: Tuple[str, ...] = ()
    format_version: Optional[int] = None
    extra: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    key_order: Tuple[str, ...] = field(default=(), compare=False, repr=False)

    @property
    def num_outputs(self) -> int:
        """The classification head's size: 1 for regression, else ``num_classes``."""
        if self.regression:
            return 1
        if self.num_classes is None:
            raise MetaFormatError(f"{META_FILE} names no num_classes for a classification "
                                  f"task ({self.task or 'unnamed'}); prepare the folder again")
        return self.num_classes

    @classmethod
    def from_json(cls, obj: Any, source: str = META_FILE) -> "GlueMeta":
        """The typed meta of a parsed meta.json object; a key of the wrong type is refused,
        naming ``source`` and the key."""
        if not isinstance(obj, dict):
            raise MetaFormatError(f"{source}: expected a JSON object, got "
                                  f"{type(obj).__name__}")
        values: Dict[str, Any] = {}
        for name, check in _CHECKS.items():
            if name in obj:
                try:
                    values[name] = check(obj[name])
                except TypeError as err:
                    raise MetaFormatError(f"{source}: {name!r} must be {err}, got "
                                          f"{obj[name]!r}") from None
        extra = {k: v for k, v in obj.items() if k not in _CHECKS}
        return cls(**values, extra=MappingProxyType(extra), key_order=tuple(obj))

    def to_json(self) -> Dict[str, Any]:
        """The meta.json object: the keys as read (in their order), then typed fields given a
        value other than their default, then new extra keys."""
        out: Dict[str, Any] = {}
        typed = {}
        for f in dataclasses.fields(self):
            if f.name in _CHECKS:
                value = getattr(self, f.name)
                default = f.default_factory() if f.default is dataclasses.MISSING else f.default
                if f.name in self.key_order or value != default:
                    typed[f.name] = _to_json_value(value)
        for key in self.key_order:
            if key in typed:
                out[key] = typed[key]
            elif key in self.extra:
                out[key] = self.extra[key]
        for source in (typed, self.extra):
            for key, value in source.items():
                out.setdefault(key, value)
        return out


def _to_json_value(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, Mapping):
        return dict(value)
    return value


_CHECKS = {
    "task": _optional(str, "a string"),
    "input_format": _optional(str, "a string"),
    "label_names": _str_tuple,
    "regression": _optional(bool, "true or false"),
    "num_classes": _optional(int, "an integer"),
    "metrics": _str_tuple,
    "main_metric": _optional(str, "a string"),
    "is_pair": _bool,
    "lowercase": _bool,
    "bpe": _optional(str, "a string"),
    "vocab_sha256": _optional(str, "a string"),
    "vocab_size": _optional(int, "an integer"),
    "unk_rate": _number,
    "splits": _splits,
    "labelled_splits": _str_tuple,
    "missing_splits": _str_tuple,
    "format_version": _optional(int, "an integer"),
}


def write_meta(folder: str, meta: GlueMeta) -> None:
    """``folder``'s meta.json (both layouts: see prepare_task, prepare_roberta_task)."""
    with open(os.path.join(folder, META_FILE), "w", encoding="utf-8") as f:
        json.dump(meta.to_json(), f, indent=2)
        f.write("\n")


def read_meta_file(data_dir: str) -> Optional[GlueMeta]:
    """A prepared folder's meta.json, or None when it has none."""
    path = os.path.join(data_dir, META_FILE)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        try:
            obj = json.load(f)
        except json.JSONDecodeError as err:
            raise MetaFormatError(f"{path}: not JSON ({err})") from None
    return GlueMeta.from_json(obj, path)
