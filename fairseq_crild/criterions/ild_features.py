"""What ``cr_ild`` asks an encoder for (a :class:`~fairseq_crild.models.requests.FeatureRequest`)
and how it picks the distilled features out of the answer.

Features are keyed ``"<object>.<k>"`` for the k-th requested layer (``"hidden.emb"``: the
embedding output of TinyBERT's uniform map), so a student and a teacher feature dict pair
up key by key.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

from torch import Tensor

from fairseq_crild.models.requests import FeatureRequest, MixupSpec

#: key of the embedding-output feature (TinyBERT's uniform map, h_0 <- h_0)
EMBEDDING_KEY = "hidden.emb"


def object_of(key: str) -> str:
    """The object ("hidden", "attention", "qkv", "cls") of a feature key."""
    return key.split(".")[0]


def feature_request(objects: Sequence[str], layers: Sequence[int],
                    mixup: Optional[MixupSpec], stop_early: bool = True) -> FeatureRequest:
    """Only what the objects need from ``layers`` (hidden states come as one list), and the
    encoder stops there (``stop_early``: e.g. the last layer's Q/K/V without the rest of
    that layer; the criterion never reads the last hidden states)."""
    return FeatureRequest(
        hidden_states=bool({"hidden", "cls"} & set(objects)),
        attention_scores=frozenset(layers) if "attention" in objects else frozenset(),
        qkv=frozenset(layers) if "qkv" in objects else frozenset(),
        mixup=mixup,
        stop_early=stop_early,
    )


def select_features(extra: Dict[str, Any], objects: Sequence[str], layers: Sequence[int],
                    embedding_pair: bool) -> Dict[str, Any]:
    """The distilled features of one forward's ``extra``, in a fixed key order (the losses
    are summed in it)."""
    feats: Dict[str, Any] = {}
    if embedding_pair:  # TinyBERT's uniform map: embedding outputs, h_0 <- h_0
        feats[EMBEDDING_KEY] = extra["hidden_states"][0]
    for k, layer in enumerate(layers):
        if "hidden" in objects:
            feats[f"hidden.{k}"] = extra["hidden_states"][layer + 1]
        if "cls" in objects:
            feats[f"cls.{k}"] = extra["hidden_states"][layer + 1][:, 0]
        if "attention" in objects:
            feats[f"attention.{k}"] = extra["attention_scores"][layer]
        if "qkv" in objects:
            feats[f"qkv.{k}"] = extra["qkv"][layer]
    return feats


def flatten_features(feats: Dict[str, Any]) -> List[Tensor]:
    """Every tensor of a feature dict (a Q/K/V entry is a dict of three)."""
    out: List[Tensor] = []
    for v in feats.values():
        out.extend(v.values() if isinstance(v, dict) else [v])
    return out
