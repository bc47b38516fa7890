"""Which parameters get weight decay, and the fairseq hooks that carry that decision.

The CR-ILD authors (like BERT's original recipe) apply no weight decay to biases and
LayerNorm weights. fairseq's Trainer builds every optimizer from one flat list of tensors,
without names, and its fp16/bf16 wrapper replaces them by fp32 copies, so the decision is
made where names exist and travels with the tensors:

* :func:`tag_no_decay` marks each parameter of the model and criterion with the attribute
  ``crild_no_decay`` (rule in :func:`is_no_decay`); :func:`install` runs it at the start of
  ``Trainer._build_optimizer``;
* fairseq's ``FP16Optimizer`` (``--fp16``, ``--bf16``) copies only its own attributes to its
  fp32 master copies; :func:`install` makes it copy the tag as well. Flattened master
  weights (``--fp16`` without ``--fp16-no-flatten-grads``) have no parameter boundaries, so
  when groups are needed the hook sets ``--fp16-no-flatten-grads`` (logged);
* :func:`decay_groups` splits a tensor list into a decayed and a non-decayed group;
  ``bert_adam`` always uses it, plain ``adam`` through the wrapped registry builder of
  ``fairseq.optim.build_optimizer`` unless ``--decay-bias-and-norm`` is given (a field this
  module adds to fairseq's adam config, default False).
"""


import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Sequence, Union

import torch
from fairseq.optim.adam import FairseqAdamConfig
from torch import nn

logger = logging.getLogger(__name__)

NO_DECAY_ATTR = "crild_no_decay"
DECAY_FLAG_HELP = (
    "apply weight decay to biases and LayerNorm weights too (fairseq's own adam); default "
    "False: they get none, as in BERT's and the CR-ILD authors' BertAdam"
)


def is_no_decay(module: nn.Module, module_name: str, param_name: str) -> bool:
    """The authors' rule (no decay for ``bias``, ``LayerNorm.weight``, ``LayerNorm.bias``),
    made independent of one naming scheme: a parameter is exempt when its own name is
    ``bias`` (any module), or when its module is a LayerNorm by type (``nn.LayerNorm`` or any
    class whose name contains ``LayerNorm``, e.g. apex/fairseq fused ones) or by name (the
    module's last name component contains ``layer_norm``/``layernorm`` in any case: ours are
    ``layer_norm``, ``attn_layer_norm``, ``final_layer_norm``, Hugging Face's ``LayerNorm``).
    Everything else (embeddings, Linear weights, projections) is decayed."""
    if param_name == "bias":
        return True
    if isinstance(module, nn.LayerNorm) or "layernorm" in type(module).__name__.lower():
        return True
    last = module_name.rsplit(".", 1)[-1].lower()
    return "layer_norm" in last or "layernorm" in last


def tag_no_decay(*roots: nn.Module) -> None:
    """Sets ``p.crild_no_decay`` on every parameter under ``roots`` (see :func:`is_no_decay`)."""
    for root in roots:
        if root is None:
            continue
        for module_name, module in root.named_modules():
            for param_name, p in module.named_parameters(recurse=False):
                setattr(p, NO_DECAY_ATTR, is_no_decay(module, module_name, param_name))


def wants_no_decay(p: torch.Tensor) -> bool:
    """A tagged parameter follows its tag; an untagged one (built outside fairseq's Trainer,
    e.g. a hand-made list) is exempt when it has at most one dimension, which is the same
    set for BERT and RoBERTa (biases and LayerNorm weights are their only 1-D tensors)."""
    tag = getattr(p, NO_DECAY_ATTR, None)
    return bool(tag) if tag is not None else p.dim() <= 1


ParamsOrGroups = Union[Iterable[torch.Tensor], Iterable[Dict[str, Any]]]


def decay_groups(params: ParamsOrGroups, weight_decay: float) -> List[Dict[str, Any]]:
    """``[{params: decayed, weight_decay: wd}, {params: exempt, weight_decay: 0}]`` (empty
    groups left out, order of ``params`` kept); lists of group dicts pass through."""
    params = list(params)
    if params and isinstance(params[0], dict):
        return params
    if any(getattr(p, "crild_flat", False) for p in params):
        raise ValueError("weight-decay groups need one tensor per parameter, and fairseq "
                         "flattened them (--fp16): add --fp16-no-flatten-grads, or "
                         "--decay-bias-and-norm to decay every parameter")
    decayed = [p for p in params if not wants_no_decay(p)]
    exempt = [p for p in params if wants_no_decay(p)]
    groups = [{"params": decayed, "weight_decay": weight_decay}]
    groups.append({"params": exempt, "weight_decay": 0.0})
    return [g for g in groups if g["params"]]


def _optimizer_name(cfg: Any) -> Any:
    if isinstance(cfg, str):
        return cfg
    return getattr(cfg, "_name", None) or getattr(cfg, "optimizer", None)


def needs_groups(cfg: Any) -> bool:
    """Whether the optimizer ``cfg`` builds exempts biases/LayerNorm weights from decay."""
    name = _optimizer_name(cfg)
    if name == "bert_adam":
        return True
    return (name == "adam" and float(getattr(cfg, "weight_decay", 0.0) or 0.0) > 0.0
            and not getattr(cfg, "decay_bias_and_norm", False))


def _build_optimizer(original: Callable[..., Any], cfg: Any, params: Sequence[Any],
                     *args: Any, **kwargs: Any) -> Any:
    if _optimizer_name(cfg) == "adam" and needs_groups(cfg):
        params = decay_groups(params, float(cfg.weight_decay))
    return original(cfg, params, *args, **kwargs)


def _trainer_build_optimizer(original: Callable[..., Any], self: Any) -> Any:
    tag_no_decay(self.model, self.criterion)
    common = self.cfg.common
    flattens = (common.fp16 and not common.bf16 and not common.amp
                and not common.memory_efficient_fp16 and not common.memory_efficient_bf16
                and not common.fp16_no_flatten_grads)
    if flattens and needs_groups(self.cfg.optimizer):
        logger.info("--fp16: setting --fp16-no-flatten-grads, the optimizer needs one tensor "
                    "per parameter (weight-decay groups, bert_adam's per-parameter clip)")
        common.fp16_no_flatten_grads = True
    return original(self)


def _build_fp32_params(original: Callable[..., Any], cls: Any, args: Any, params: Any,
                       flatten: bool = True) -> Any:
    fp32 = original.__func__(cls, args, params, flatten=flatten)
    if isinstance(fp32, list):
        for p, p32 in zip(params, fp32):
            if hasattr(p, NO_DECAY_ATTR):
                setattr(p32, NO_DECAY_ATTR, getattr(p, NO_DECAY_ATTR))
    elif isinstance(fp32, dict):
        for flat in fp32.values():
            flat.crild_flat = True
    return fp32


@dataclass
class CrildAdamConfig(FairseqAdamConfig):
    """fairseq's adam config plus the plugin's ``--decay-bias-and-norm``."""

    decay_bias_and_norm: bool = field(default=False, metadata={"help": DECAY_FLAG_HELP})


def _add_adam_flag() -> None:
    """Registers :class:`CrildAdamConfig` in place of fairseq's adam config (argparse, hydra
    and checkpoint loading all read it from the registry)."""
    from fairseq import optim
    from fairseq.optim.adam import FairseqAdam
    from hydra.core.config_store import ConfigStore

    if optim.OPTIMIZER_DATACLASS_REGISTRY.get("adam") is CrildAdamConfig:
        return
    optim.OPTIMIZER_DATACLASS_REGISTRY["adam"] = CrildAdamConfig
    setattr(FairseqAdam, "__dataclass", CrildAdamConfig)
    node = CrildAdamConfig()
    node._name = "adam"
    ConfigStore.instance().store(name="adam", group="optimizer", node=node, provider="fairseq")


def install() -> None:
    """Hooks the three fairseq points above (idempotent)."""
    from fairseq import optim
    from fairseq.optim.fp16_optimizer import _FP16OptimizerMixin
    from fairseq.trainer import Trainer

    from fairseq_crild.patches.patching import calling, patch_once

    _add_adam_flag()
    # the registry builder, called by optim.build_optimizer after it drops frozen tensors
    patch_once(optim, "_build_optimizer", calling(_build_optimizer), "adam's no-decay groups")

    def trainer_build(original: Callable[..., Any]) -> Callable[..., Any]:
        def build(self: Any) -> Any:  # a function, so that it binds as a method
            return _trainer_build_optimizer(original, self)
        return build

    def fp32_build(current: Any) -> Callable[..., Any]:
        def build_fp32(cls: Any, args: Any, params: Any, flatten: bool = True) -> Any:
            return _build_fp32_params(current, cls, args, params, flatten)
        return build_fp32

    patch_once(Trainer, "_build_optimizer", trainer_build, "tag the no-decay parameters")
    patch_once(_FP16OptimizerMixin, "build_fp32_params", fp32_build,
               "fp32 master copies keep the no-decay tag", kind="classmethod")
