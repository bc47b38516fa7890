"""``--optimizer bert_adam``: the optimizer every stage of the CR-ILD authors' scripts uses.

BERT's original Adam variant, as the authors' scripts run it: Adam moments WITHOUT bias
correction, each parameter's gradient clipped to L2 norm ``--per-param-clip-norm`` on its
own before its moment update, and decoupled weight decay:

    g = g * min(1, c / (||g|| + 1e-6))            (torch's clip_grad_norm_, per parameter)
    m = b1 m + (1 - b1) g ;  v = b2 v + (1 - b2) g^2
    p = p - lr * (m / (sqrt(v) + eps) + wd * p)   (wd = 0 for biases and LayerNorm weights)

With fairseq's ``--clip-norm 1.0`` (a global clip before the step) this is the authors'
update. Without bias correction the first steps are larger than bias-corrected Adam's at the
same lr (m/sqrt(v) starts at (1-b1)/sqrt(1-b2) = 3.16 times the normalised gradient and
decays to 1), which is part of their recipe, not a bug to fix here. The learning rate comes
from fairseq's scheduler (the authors' warm-up/linear decay is ``--lr-scheduler
polynomial_decay --warmup-updates``).

Parameter groups: see :mod:`fairseq_crild.optim.param_groups` for the no-decay rule and how
it survives fairseq's fp16/bf16 wrappers. State (``exp_avg``, ``exp_avg_sq``, ``step``) is a
plain ``torch.optim.Optimizer`` state, saved in fairseq checkpoints and restored on resume.
"""


import ast
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

import torch
from fairseq.dataclass import FairseqDataclass
from fairseq.optim import FairseqOptimizer, register_optimizer
from omegaconf import II, OmegaConf

from fairseq_crild.optim.param_groups import DECAY_FLAG_HELP, decay_groups, wants_no_decay

CLIP_EPS = 1e-6  # torch.nn.utils.clip_grad_norm_'s, which the authors' optimizer calls


@dataclass
class BertAdamConfig(FairseqDataclass):
    adam_betas: Any = field(
        default=(0.9, 0.999), metadata={"help": "betas for the (uncorrected) Adam moments"}
    )
    adam_eps: float = field(
        default=1e-6, metadata={"help": "epsilon added to sqrt(v) (the authors': 1e-6)"}
    )
    weight_decay: float = field(
        default=0.01,
        metadata={"help": "decoupled weight decay (the authors': 0.01); biases and LayerNorm "
                  "weights get 0 unless --decay-bias-and-norm"},
    )
    per_param_clip_norm: float = field(
        default=1.0,
        metadata={"help": "clip each parameter's gradient to this L2 norm on its own before "
                  "its moment update (the authors': 1.0; 0 = off). Global clipping is "
                  "fairseq's --clip-norm, applied first"},
    )
    decay_bias_and_norm: bool = field(default=False, metadata={"help": DECAY_FLAG_HELP})
    lr: List[float] = II("optimization.lr")


class BertAdam(torch.optim.Optimizer):
    """The update in the module docstring; low-precision parameters (``--memory-efficient-
    bf16``) are updated through an fp32 copy with fp32 state, others in their own dtype."""

    def __init__(self, params: Iterable[Any], lr: float = 1e-3,
                 betas: Tuple[float, float] = (0.9, 0.999), eps: float = 1e-6,
                 weight_decay: float = 0.01, max_grad_norm: float = 1.0) -> None:
        if lr < 0.0:
            raise ValueError(f"--lr must be >= 0, got {lr}")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"--adam-betas must lie in [0, 1), got {betas}")
        if eps <= 0.0:
            raise ValueError(f"--adam-eps must be > 0, got {eps}")
        if max_grad_norm < 0.0:
            raise ValueError(f"--per-param-clip-norm must be >= 0 (0 = off), got {max_grad_norm}")
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                        max_grad_norm=max_grad_norm)
        super().__init__(params, defaults)

    @property
    def supports_memory_efficient_fp16(self) -> bool:
        return True

    @property
    def supports_flat_params(self) -> bool:
        return False  # the per-parameter clip needs parameter boundaries

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], Any]] = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            clip = group["max_grad_norm"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("bert_adam does not support sparse gradients")
                low = p.dtype in (torch.float16, torch.bfloat16)
                grad = p.grad.float() if low else p.grad
                if clip > 0:
                    coef = clip / (torch.linalg.vector_norm(grad) + CLIP_EPS)
                    grad = grad * coef.clamp(max=1.0)
                data = p.float() if low else p
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(data)
                    state["exp_avg_sq"] = torch.zeros_like(data)
                m, v = state["exp_avg"], state["exp_avg_sq"]
                if m.dtype != data.dtype:  # state saved from another precision
                    m, v = m.to(data.dtype), v.to(data.dtype)
                    state["exp_avg"], state["exp_avg_sq"] = m, v
                state["step"] += 1
                m.mul_(beta1).add_(grad, alpha=1.0 - beta1)
                v.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
                update = m / (v.sqrt() + group["eps"])
                if group["weight_decay"] > 0.0:
                    update.add_(data, alpha=group["weight_decay"])
                data.add_(update, alpha=-group["lr"])
                if low:
                    p.copy_(data)
        return loss


@register_optimizer("bert_adam", dataclass=BertAdamConfig)
class FairseqBertAdam(FairseqOptimizer):
    """fairseq wrapper of :class:`BertAdam`; groups biases and LayerNorm weights apart."""

    def __init__(self, cfg: BertAdamConfig, params: Iterable[Any]) -> None:
        super().__init__(cfg)
        config = self.optimizer_config
        params = list(params)
        if not cfg.decay_bias_and_norm:
            params = decay_groups(params, config["weight_decay"])
        self._optimizer = BertAdam(params, **config)

    @property
    def optimizer_config(self) -> Dict[str, Any]:
        """Overrides for args stored in checkpoints (fairseq's convention, as in adam)."""
        betas = self.cfg.adam_betas
        if isinstance(betas, str):
            betas = ast.literal_eval(betas)
        elif OmegaConf.is_config(betas):
            betas = OmegaConf.to_container(betas)
        lr = self.cfg.lr[0] if isinstance(self.cfg.lr, Collection) else self.cfg.lr
        return {"lr": lr, "betas": tuple(betas), "eps": self.cfg.adam_eps,
                "weight_decay": self.cfg.weight_decay,
                "max_grad_norm": self.cfg.per_param_clip_norm}


__all__ = ["BertAdam", "BertAdamConfig", "FairseqBertAdam", "wants_no_decay"]
