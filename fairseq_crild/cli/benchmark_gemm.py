"""The benchmark's GEMM references: the square N^3 peak, and the encoder's own matmuls alone.

Why the second: a step's share of the N^3 peak mixes two losses, the matmuls running slower
at the model's small shapes (h = 384 wide, a few thousand token rows, attention products of
one example's length) and the time spent outside the matmuls. ``encoder_gemms`` times only
the matmuls of one encoder forward at a batch's exact shapes (Q, K, V and output projections,
the two feed-forward matrices, ``Q K^T`` and ``softmax x V`` per head), on native tensors of
the precision with nothing else in between: the ceiling of what any step built from those
shapes could reach, however well everything else were fused away.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, Tuple

import torch

from fairseq_crild.cli.benchmark_flops import EncoderShape, gemm_flops


def gemm_pass(dtype: torch.dtype, n: int, count: int, device: torch.device
              ) -> Tuple[Callable[[], None], int]:
    """(``count`` n x n x n products in ``dtype``, their FLOPs): the peak the variants are
    compared with, timed in every round next to them at the same thread count."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype)
    b = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype)
    out = torch.empty_like(a)

    def run() -> None:
        for _ in range(count):
            torch.matmul(a, b, out=out)
    return run, count * gemm_flops(n)


@dataclass
class EncoderGemms:
    """Runs one encoder forward's matmuls (and only those) at a (batch, width) shape.

    Weights are shared by every layer (speed does not depend on their values; one layer's
    weights staying in cache makes the ceiling, if anything, optimistic); activations are
    allocated once per shape, so a timed call is the matmuls alone. ``flops`` counts
    what the products computed, 2 x m x n x k each, from the tensors' own shapes."""

    shape: EncoderShape
    heads: int
    dtype: torch.dtype
    device: torch.device
    flops: int = 0
    _weights: Dict[str, torch.Tensor] = field(default_factory=dict)
    _acts: Dict[Tuple[int, int], Dict[str, torch.Tensor]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.shape.hidden % self.heads:
            raise ValueError(f"hidden width {self.shape.hidden} is not a multiple of "
                             f"{self.heads} attention heads")
        h, f = self.shape.hidden, self.shape.ffn
        gen = torch.Generator().manual_seed(0)

        def rand(*size: int) -> torch.Tensor:
            return (torch.randn(*size, generator=gen) * 0.02).to(self.device, self.dtype)
        self._weights = {"proj": rand(h, h), "proj_b": rand(h), "fc1": rand(f, h),
                         "fc1_b": rand(f), "fc2": rand(h, f), "fc2_b": rand(h)}

    def _activations(self, batch: int, width: int) -> Dict[str, torch.Tensor]:
        key = (batch, width)
        if key not in self._acts:
            h, f = self.shape.hidden, self.shape.ffn
            dh = h // self.heads
            gen = torch.Generator().manual_seed(1)

            def rand(*size: int) -> torch.Tensor:
                return torch.randn(*size, generator=gen).to(self.device, self.dtype)
            self._acts[key] = {"x": rand(batch * width, h), "ff": rand(batch * width, f),
                               "q": rand(batch * self.heads, width, dh),
                               "kt": rand(batch * self.heads, dh, width),
                               "p": rand(batch * self.heads, width, width),
                               "v": rand(batch * self.heads, width, dh)}
        return self._acts[key]

    def __call__(self, batch: int, width: int) -> None:
        a, w = self._activations(batch, width), self._weights
        flops = 0
        for _ in range(self.shape.layers):
            for _ in range(4):  # Q, K, V, output projection
                torch.nn.functional.linear(a["x"], w["proj"], w["proj_b"])
            torch.nn.functional.linear(a["x"], w["fc1"], w["fc1_b"])
            torch.nn.functional.linear(a["ff"], w["fc2"], w["fc2_b"])
            torch.bmm(a["q"], a["kt"])  # scores
            torch.bmm(a["p"], a["v"])  # weighted values
            rows, h = a["x"].shape
            bh, length, dh = a["q"].shape
            flops += 2 * rows * h * (4 * h + 2 * self.shape.ffn)
            flops += 2 * 2 * bh * length * length * dh
        self.flops += flops
