"""Hugging Face BERT folders <-> fairseq checkpoints of the ``bert`` model (and our
``crild_roberta`` -> Hugging Face RoBERTa, for export).

Pure functions over config dicts and state dicts (transformers is not needed): the scripts in
``scripts/`` add file handling. WordPiece ids are permuted into fairseq dictionary order (see
:mod:`fairseq_crild.data.dictionary`) so every token keeps its vector.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import Tensor

from fairseq_crild.data.dictionary import dictionary_from_vocab, hf_to_fairseq_order, read_vocab_txt
from fairseq_crild.errors import CrildError

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
TOKENIZER_CONFIG = "tokenizer_config.json"


class ConversionError(CrildError, ValueError):
    """The input folder or checkpoint cannot be converted; the message says why and where."""


# (our name, HF name) inside one transformer layer
_LAYER_KEYS: List[Tuple[str, str]] = [
    ("attention.q_proj", "attention.self.query"),
    ("attention.k_proj", "attention.self.key"),
    ("attention.v_proj", "attention.self.value"),
    ("attention.out_proj", "attention.output.dense"),
    ("attn_layer_norm", "attention.output.LayerNorm"),
    ("fc1", "intermediate.dense"),
    ("fc2", "output.dense"),
    ("final_layer_norm", "output.LayerNorm"),
]
_TOP_KEYS: List[Tuple[str, str]] = [
    ("embeddings.word_embeddings", "embeddings.word_embeddings"),
    ("embeddings.position_embeddings", "embeddings.position_embeddings"),
    ("embeddings.token_type_embeddings", "embeddings.token_type_embeddings"),
    ("embeddings.layer_norm", "embeddings.LayerNorm"),
    ("pooler", "pooler.dense"),
]


def bert_config_from_hf(hf: Dict[str, Any], source: str = "config.json") -> Dict[str, Any]:
    """Maps a HF ``BertConfig`` dict to our model config; refuses what is not plain BERT."""
    model_type = hf.get("model_type")
    if model_type in ("roberta", "xlm-roberta"):
        raise ConversionError(
            f"{source}: model_type is {model_type!r}: Hugging Face RoBERTa checkpoints are not "
            "converted; only fairseq RoBERTa checkpoints are read (pass fairseq's model.pt "
            "directly as --teacher-path / --init-student-from, data from prepare_glue_roberta.py)"
        )
    if model_type != "bert":
        raise ConversionError(
            f"{source}: model_type is {model_type!r}, expected 'bert' (only BERT checkpoints "
            "convert here)"
        )
    act = hf.get("hidden_act", "gelu")
    if act != "gelu":
        raise ConversionError(f"{source}: hidden_act {act!r} is not supported (needs 'gelu')")
    pos = hf.get("position_embedding_type", "absolute")
    if pos != "absolute":
        raise ConversionError(f"{source}: position_embedding_type {pos!r} is not supported")
    try:
        return {
            "encoder_layers": int(hf["num_hidden_layers"]),
            "encoder_embed_dim": int(hf["hidden_size"]),
            "encoder_attention_heads": int(hf["num_attention_heads"]),
            "encoder_ffn_embed_dim": int(hf["intermediate_size"]),
            "max_position_embeddings": int(hf["max_position_embeddings"]),
            "type_vocab_size": int(hf.get("type_vocab_size", 2)),
            "layer_norm_eps": float(hf.get("layer_norm_eps", 1e-12)),
            "dropout": float(hf.get("hidden_dropout_prob", 0.1)),
            "attention_dropout": float(hf.get("attention_probs_dropout_prob", 0.1)),
            "pooler_dropout": float(
                hf.get("classifier_dropout") or hf.get("hidden_dropout_prob", 0.1)
            ),
            "init_std": float(hf.get("initializer_range", 0.02)),
        }
    except KeyError as err:
        raise ConversionError(f"{source}: missing BERT config field {err.args[0]!r}") from None


def hf_config_from_bert(cfg: Dict[str, Any], vocab_size: int, pad_id: int) -> Dict[str, Any]:
    """The inverse of :func:`bert_config_from_hf` (a config transformers' BertModel reads)."""
    return {
        "architectures": ["BertForSequenceClassification"],
        "model_type": "bert",
        "vocab_size": vocab_size,
        "hidden_size": cfg["encoder_embed_dim"],
        "num_hidden_layers": cfg["encoder_layers"],
        "num_attention_heads": cfg["encoder_attention_heads"],
        "intermediate_size": cfg["encoder_ffn_embed_dim"],
        "hidden_act": "gelu",
        "hidden_dropout_prob": cfg["dropout"],
        "attention_probs_dropout_prob": cfg["attention_dropout"],
        "classifier_dropout": cfg["pooler_dropout"],
        "max_position_embeddings": cfg["max_position_embeddings"],
        "type_vocab_size": cfg["type_vocab_size"],
        "initializer_range": cfg["init_std"],
        "layer_norm_eps": cfg["layer_norm_eps"],
        "pad_token_id": pad_id,
        "position_embedding_type": "absolute",
    }


def _strip_prefix(sd: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """Accepts BertModel (no prefix) and BertFor* (``bert.`` prefix) state dicts."""
    if any(k.startswith("bert.") for k in sd):
        return {k[len("bert."):] if k.startswith("bert.") else k: v for k, v in sd.items()}
    return dict(sd)


def _legacy_names(sd: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """Old TF-converted checkpoints name LayerNorm parameters gamma/beta."""
    out = {}
    for k, v in sd.items():
        k = re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", k)
        k = re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", k)
        out[k] = v
    return out


def state_dict_from_hf(
    hf_sd: Dict[str, Tensor], num_layers: int, perm: List[int], head_name: Optional[str] = None
) -> Dict[str, Tensor]:
    """HF BERT weights -> our names; word embeddings gathered into dictionary order."""
    sd = _legacy_names(_strip_prefix(hf_sd))
    out: Dict[str, Tensor] = {}
    pairs = list(_TOP_KEYS)
    pairs += [(f"layers.{i}.{ours}", f"encoder.layer.{i}.{hf}")
              for i in range(num_layers) for ours, hf in _LAYER_KEYS]
    for ours, hf in pairs:
        suffixes = ("weight",) if ours.endswith("_embeddings") else ("weight", "bias")
        for suffix in suffixes:
            key = f"{hf}.{suffix}"
            if key in sd:
                out[f"{ours}.{suffix}"] = sd[key].float()
            elif not ours.startswith("pooler"):  # a missing pooler keeps its initialisation
                raise ConversionError(f"weights lack {key!r}")
    word = out["embeddings.word_embeddings.weight"]
    if max(perm) >= word.size(0):
        raise ConversionError(
            f"vocab.txt has {len(perm)} tokens but the embedding matrix has {word.size(0)} rows"
        )
    out["embeddings.word_embeddings.weight"] = word[torch.tensor(perm)].clone()
    if head_name is not None and "classifier.weight" in sd:
        out[f"classification_heads.{head_name}.out_proj.weight"] = sd["classifier.weight"]
        out[f"classification_heads.{head_name}.out_proj.bias"] = sd["classifier.bias"]
    return {k: v.contiguous() for k, v in out.items()}


def fairseq_checkpoint(
    model_cfg: Dict[str, Any], state_dict: Dict[str, Tensor], source: str, vocab_sha256: str,
    label_names: Optional[List[str]] = None, hf_id2label: Optional[List[str]] = None,
) -> Dict[str, Any]:
    """A checkpoint fairseq's ``--finetune-from-model`` / ``--restore-file`` can read.

    ``label_names``: what each output of a kept classifier means (recorded as a fine-tuned
    teacher's are, so the teacher loader compares them with the data's); ``hf_id2label``:
    the HF config's own names, kept for the record (generic LABEL_i ones included).
    """
    task_state: Dict[str, Any] = {"vocab_sha256": vocab_sha256,
                                  "checkpoint_role": "converted_base"}
    if label_names is not None:
        task_state["label_names"] = list(label_names)
    if hf_id2label is not None:
        task_state["hf_id2label"] = list(hf_id2label)
    return {
        "args": None,
        "cfg": {"model": {"_name": "bert", **model_cfg}},
        "model": state_dict,
        "criterion": None,
        "optimizer_history": [
            {"criterion_name": "none", "optimizer_name": "none", "lr_scheduler_state": {},
             "num_updates": 0}
        ],
        "task_state": task_state,
        "extra_state": {"converted_from": source},
    }


_GENERIC_LABEL = re.compile(r"LABEL_(\d+)")


def hf_id2label(hf: Dict[str, Any], num_outputs: int,
                source: str = "config.json") -> Optional[List[str]]:
    """The classifier's label names in output order from ``id2label`` (None: the config has
    none, or a regression head)."""
    raw = hf.get("id2label")
    if not raw or num_outputs == 1 or hf.get("problem_type") == "regression":
        return None
    try:
        table = {int(k): str(v) for k, v in raw.items()}
    except (AttributeError, ValueError):
        raise ConversionError(f"{source}: id2label must map output indices to names") from None
    if sorted(table) != list(range(num_outputs)):
        raise ConversionError(f"{source}: id2label has indices {sorted(table)} but the "
                              f"classifier has {num_outputs} outputs")
    return [table[i] for i in range(num_outputs)]


def labels_are_generic(names: List[str]) -> bool:
    """transformers' placeholder names (LABEL_0, LABEL_1, ...), which say nothing about
    what an output means."""
    return all((m := _GENERIC_LABEL.fullmatch(n)) is not None and int(m.group(1)) == i
               for i, n in enumerate(names))


def split_names(spec: str, option: str, num_outputs: int) -> List[str]:
    """``a,b`` -> ``["a", "b"]``, one distinct name per classifier output."""
    names = [n.strip() for n in spec.split(",")]
    if any(not n for n in names) or len(set(names)) != len(names):
        raise ConversionError(f"{option} {spec!r}: expected distinct comma-separated names")
    if len(names) != num_outputs:
        raise ConversionError(f"{option} {spec!r}: {len(names)} names for a classifier with "
                              f"{num_outputs} outputs")
    return names


def reorder_head(sd: Dict[str, Tensor], head_name: str, hf_names: List[str],
                 order: List[str]) -> None:
    """Permutes the classifier's rows in place so output ``i`` is the label ``order[i]``
    (matched to ``hf_names``, the HF id2label, ignoring case)."""
    lookup = {n.lower(): i for i, n in enumerate(hf_names)}
    missing = [n for n in order if n.lower() not in lookup]
    if missing or len(lookup) != len(hf_names):
        raise ConversionError(f"--label-order: {missing} not among the classifier's id2label "
                              f"names {hf_names}")
    index = torch.tensor([lookup[n.lower()] for n in order])
    for suffix in ("weight", "bias"):
        key = f"classification_heads.{head_name}.out_proj.{suffix}"
        sd[key] = sd[key][index].clone().contiguous()


def state_dict_to_hf(
    sd: Dict[str, Tensor], num_layers: int, head_name: Optional[str] = None
) -> Dict[str, Tensor]:
    """Our weights -> ``BertForSequenceClassification`` names (vocabulary order unchanged)."""
    out: Dict[str, Tensor] = {}
    pairs = list(_TOP_KEYS)
    pairs += [(f"layers.{i}.{ours}", f"encoder.layer.{i}.{hf}")
              for i in range(num_layers) for ours, hf in _LAYER_KEYS]
    for ours, hf in pairs:
        for suffix in ("weight", "bias"):
            if f"{ours}.{suffix}" in sd:
                out[f"bert.{hf}.{suffix}"] = sd[f"{ours}.{suffix}"]
    if head_name is not None:
        prefix = f"classification_heads.{head_name}.out_proj."
        out["classifier.weight"] = sd[prefix + "weight"]
        out["classifier.bias"] = sd[prefix + "bias"]
    return {k: v.detach().clone().contiguous() for k, v in out.items()}


def hf_config_from_roberta(cfg: Dict[str, Any], vocab_size: int, pad_id: int, bos_id: int,
                           eos_id: int, position_rows: int) -> Dict[str, Any]:
    """A config transformers' RobertaModel reads for a ``crild_roberta`` model: BERT's fields
    with RoBERTa's position table (``position_rows`` rows, numbered from ``pad_id + 1`` as
    ours) and one token type (written as a zero row, since transformers always adds it)."""
    hf = hf_config_from_bert(cfg, vocab_size, pad_id)
    hf.update({
        "architectures": ["RobertaForSequenceClassification"],
        "model_type": "roberta",
        "max_position_embeddings": position_rows,
        "type_vocab_size": 1,
        "bos_token_id": bos_id,
        "eos_token_id": eos_id,
    })
    return hf


def state_dict_to_hf_roberta(
    sd: Dict[str, Tensor], num_layers: int, head_name: str
) -> Dict[str, Tensor]:
    """Our ``crild_roberta`` weights -> ``RobertaForSequenceClassification`` names.

    The encoder maps as BERT's, under ``roberta.``; token-type row 0 is zeros (RoBERTa has no
    token types, transformers adds that row to every token); our pooler (dense + tanh on
    ``<s>``) and head (out_proj) become its ``classifier.dense`` / ``classifier.out_proj``,
    the fairseq RoBERTa head they were converted from.
    """
    out: Dict[str, Tensor] = {}
    for key, value in state_dict_to_hf(sd, num_layers).items():
        if key.startswith("bert.pooler.dense."):
            out["classifier.dense." + key[len("bert.pooler.dense."):]] = value
        else:
            out["roberta." + key[len("bert."):]] = value
    word = sd["embeddings.word_embeddings.weight"]
    out["roberta.embeddings.token_type_embeddings.weight"] = word.new_zeros(1, word.size(1))
    prefix = f"classification_heads.{head_name}.out_proj."
    for suffix in ("weight", "bias"):
        out[f"classifier.out_proj.{suffix}"] = sd[prefix + suffix].detach().clone().contiguous()
    return out


def read_hf_folder(hf_dir: str) -> Tuple[Dict[str, Any], Dict[str, Tensor], List[str], bool]:
    """Reads config.json, the weights and vocab.txt of a HF BERT folder, checking each."""
    if not os.path.isdir(hf_dir):
        raise ConversionError(f"{hf_dir}: not a directory")
    config_path = os.path.join(hf_dir, "config.json")
    if not os.path.isfile(config_path):
        raise ConversionError(f"{hf_dir}: no config.json (is this a Hugging Face model folder?)")
    try:
        with open(config_path, encoding="utf-8") as f:
            hf_cfg = json.load(f)
    except json.JSONDecodeError as err:
        raise ConversionError(f"{config_path}: not valid JSON ({err})") from None
    vocab_path = os.path.join(hf_dir, "vocab.txt")
    if not os.path.isfile(vocab_path):
        raise ConversionError(f"{hf_dir}: no vocab.txt (the WordPiece vocabulary is needed)")
    weights = _load_hf_weights(hf_dir)
    vocab = read_vocab_txt(vocab_path)
    lowercase = _read_lowercase(hf_dir)
    return hf_cfg, weights, vocab, lowercase


def _load_hf_weights(hf_dir: str) -> Dict[str, Tensor]:
    for name in WEIGHT_FILES:
        path = os.path.join(hf_dir, name)
        if not os.path.isfile(path):
            continue
        if name.endswith(".safetensors"):
            from safetensors.torch import load_file

            return load_file(path)
        return torch.load(path, map_location="cpu", weights_only=True)
    raise ConversionError(f"{hf_dir}: no weights (expected one of {', '.join(WEIGHT_FILES)})")


def _read_lowercase(hf_dir: str) -> bool:
    """Whether the checkpoint's tokenizer lower-cases (tokenizer_config.json; default True)."""
    path = os.path.join(hf_dir, TOKENIZER_CONFIG)
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            return bool(json.load(f).get("do_lower_case", True))
    return True


def convert_hf_folder(hf_dir: str, head_name: Optional[str] = None):
    """Returns (model config dict, state dict, fairseq Dictionary, lowercase) for a HF folder."""
    hf_cfg, hf_sd, vocab, lowercase = read_hf_folder(hf_dir)
    cfg = bert_config_from_hf(hf_cfg, os.path.join(hf_dir, "config.json"))
    vocab_size = int(hf_cfg.get("vocab_size", len(vocab)))
    if vocab_size != len(vocab):
        raise ConversionError(
            f"{hf_dir}/vocab.txt has {len(vocab)} tokens but config.json says vocab_size "
            f"{vocab_size}"
        )
    try:
        dictionary = dictionary_from_vocab(vocab)
    except ValueError as err:
        raise ConversionError(f"{hf_dir}/vocab.txt: {err}") from None
    word = _strip_prefix(hf_sd).get("embeddings.word_embeddings.weight")
    if word is None:
        raise ConversionError(f"{hf_dir}: weights lack embeddings.word_embeddings.weight")
    if word.size(0) != len(vocab):
        raise ConversionError(
            f"{hf_dir}: vocab.txt has {len(vocab)} tokens but the word embeddings have "
            f"{word.size(0)} rows"
        )
    perm = hf_to_fairseq_order(vocab, dictionary)
    sd = state_dict_from_hf(hf_sd, cfg["encoder_layers"], perm, head_name)
    return cfg, sd, dictionary, lowercase
