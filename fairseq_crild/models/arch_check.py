"""The ``--arch`` flags that fit a checkpoint, and a short error when they do not.

fairseq builds the model from ``--arch`` and the size flags, then loads
``--finetune-from-model`` / ``--restore-file`` into it; a wrong shape ends in torch's list of
every mismatched tensor (hundreds of lines) under fairseq's "please ensure that the
architectures match". :func:`guard_checkpoint_loading` checks the sizes first and names only
the ones that differ, with the flags that build the checkpoint's shape.

    python -m fairseq_crild.models.arch_check CKPT.pt    # prints the flags that fit CKPT.pt
"""

from __future__ import annotations

import dataclasses
import re
import sys
from typing import Any, Dict, List, Mapping, Optional

from torch import nn

from fairseq_crild.errors import CrildError
from fairseq_crild.models.bert import BertConfig

# fields that decide tensor shapes, in the order the flags are printed
SHAPE_FIELDS = ("encoder_layers", "encoder_embed_dim", "encoder_attention_heads",
                "encoder_ffn_embed_dim", "max_position_embeddings", "type_vocab_size")
# fields that change outputs but not shapes: printed when they differ from the default
VALUE_FIELDS = ("layer_norm_eps", "classifier_activation")
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(BertConfig)}
HEADS_HINT = ("plus the checkpoint's --encoder-attention-heads, which its weights do not "
              "show: `python -m fairseq_crild.models.arch_check CKPT` prints every flag from "
              "its config")


class ArchMismatchError(CrildError, ValueError):
    """A checkpoint's tensors do not fit the model built from --arch and the size flags."""


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def arch_flags(model_cfg: Mapping[str, Any]) -> str:
    """``--arch bert --encoder-layers 6 ...``: the flags that rebuild ``model_cfg``'s model
    (every shape field; eps/head activation only where they differ from the defaults)."""
    parts = ["--arch", "bert"]
    for name in SHAPE_FIELDS:
        if model_cfg.get(name) is not None:
            parts += [_flag(name), str(model_cfg[name])]
    for name in VALUE_FIELDS:
        value = model_cfg.get(name)
        if value is not None and value != _DEFAULTS.get(name):
            parts += [_flag(name), str(value)]
    return " ".join(parts)


def sizes_from_state_dict(sd: Mapping[str, Any]) -> Dict[str, int]:
    """The sizes a BERT state dict shows (the head count is not among them) plus its
    vocabulary rows (``vocab_rows``)."""
    sizes: Dict[str, int] = {}
    layers = {int(m.group(1)) for k in sd for m in [re.match(r"layers\.(\d+)\.", k)] if m}
    sizes["encoder_layers"] = len(layers)
    word = sd.get("embeddings.word_embeddings.weight")
    if word is not None:
        sizes["vocab_rows"], sizes["encoder_embed_dim"] = (int(x) for x in word.shape)
    fc1 = sd.get("layers.0.fc1.weight")
    if fc1 is not None:
        sizes["encoder_ffn_embed_dim"] = int(fc1.shape[0])
    for name, key in (("max_position_embeddings", "embeddings.position_embeddings.weight"),
                      ("type_vocab_size", "embeddings.token_type_embeddings.weight")):
        if sd.get(key) is not None:
            sizes[name] = int(sd[key].shape[0])
    return sizes


def mismatch_message(checkpoint_sd: Mapping[str, Any], model: nn.Module,
                     strict: bool = True) -> Optional[str]:
    """None when ``checkpoint_sd`` fits ``model`` (heads aside: the model reconciles those),
    else one paragraph naming each differing size and the flags of the checkpoint's shape."""
    got = sizes_from_state_dict(checkpoint_sd)
    here = sizes_from_state_dict(model.state_dict())
    if "encoder_embed_dim" not in got:
        return None  # not a BERT state dict: leave the error to torch
    differ = [name for name in ("encoder_layers", "encoder_embed_dim", "encoder_ffn_embed_dim",
                                "max_position_embeddings", "type_vocab_size")
              if name in got and name in here and got[name] != here[name]
              and (strict or name != "encoder_layers")]
    vocab = got.get("vocab_rows") != here.get("vocab_rows")
    if not differ and not vocab:
        return None
    cfg = getattr(model, "cfg", None)
    arch = getattr(cfg, "_name", None) or getattr(cfg, "arch", None) or "bert"
    lines = []
    if differ:
        lines.append(f"the checkpoint does not fit the model of --arch {arch}: " + ", ".join(
            f"{name} {got[name]} in the checkpoint vs {here[name]} here" for name in differ))
        fit = arch_flags({**{k: v for k, v in got.items() if k in SHAPE_FIELDS}})
        lines.append(f"flags that build the checkpoint's shape: {fit} ({HEADS_HINT})")
    if vocab:
        lines.append(f"vocabulary: {got.get('vocab_rows')} embedding rows in the checkpoint vs "
                     f"{here.get('vocab_rows')} symbols in the data's dict.txt; binarise the "
                     "data with the dict.txt of the checkpoint's conversion")
    return "; ".join(lines)


def _pre_hook(module: nn.Module, state_dict, prefix, local_metadata, strict, missing_keys,
              unexpected_keys, error_msgs) -> None:
    if prefix:
        return
    message = mismatch_message(state_dict, module, strict)
    if message is not None:
        raise ArchMismatchError(message)


def guard_checkpoint_loading(model: nn.Module) -> nn.Module:
    """Makes ``model.load_state_dict`` refuse a checkpoint of another shape in one paragraph
    (the sizes that differ and the flags that fit) before torch lists every tensor."""
    if not getattr(model, "_crild_arch_guard", False):
        model.register_load_state_dict_pre_hook(_pre_hook)
        model._crild_arch_guard = True
    return model


def checkpoint_flags(path: str) -> str:
    """The flags of a checkpoint's model, read from its saved config (heads included)."""
    from fairseq_crild.models import roberta_conversion as rc
    from fairseq_crild.models.loading import read_checkpoint

    state = read_checkpoint(path)
    if rc.is_fairseq_roberta(state):
        raise ValueError(f"{path}: a fairseq RoBERTa checkpoint: use it as --teacher-path or "
                         "--init-student-from directly (its --arch is fairseq's roberta_*)")
    cfg = dict(rc.model_config_dict(state) or {})
    sizes = sizes_from_state_dict(state["model"])
    for name in SHAPE_FIELDS:
        if cfg.get(name) is None and name in sizes:
            cfg[name] = sizes[name]
    if cfg.get("encoder_attention_heads") is None:
        cfg["encoder_attention_heads"] = _DEFAULTS["encoder_attention_heads"]
    return arch_flags(cfg)


def main(argv: Optional[List[str]] = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="print the --arch flags that fit a checkpoint")
    parser.add_argument("checkpoint")
    args = parser.parse_args(argv)
    try:
        print(checkpoint_flags(args.checkpoint))
    except (ValueError, FileNotFoundError) as err:
        print(f"arch_check: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
