"""Counter-based dropout on the CPU, mask computed in parallel (``--dropout-impl hash``).

Why: torch's CPU dropout draws its mask from the generator's serial Bernoulli kernel (one
thread whatever ``torch.set_num_threads`` says), 20-27% of a bf16 training step here
(docs/results.md, issue 18). Here each element's keep decision is a pure function of one
64-bit seed (drawn from torch's CPU generator, so ``--seed`` and fairseq's per-update
reseeding still fix it) and the element's index: SplitMix64's i-th output, two 32-bit draws
per output, element kept when its draw is >= p * 2^32. One fused C++ loop over
``at::parallel_for`` scales the kept elements; the backward recomputes the same mask on the
gradient, so no mask is stored. The distribution is torch's (Bernoulli(1 - p) per element,
kept values scaled by 1 / (1 - p)); the random stream is not, so results differ from
``--dropout-impl torch`` draw by draw.

The kernel is compiled at first use (about a minute; :mod:`fairseq_crild.cpp_build`) and
needs a C++ compiler and ninja. Non-CPU tensors use torch's
own dropout (its CUDA kernel is already parallel).
"""

from __future__ import annotations

import functools
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fairseq_crild.cpp_build import CppKernelUnavailable, load_cpu_kernel

# SplitMix64 (Steele, Lea & Flood 2014): state seed + (i + 1) * golden gamma, then its mixer
GOLDEN_GAMMA = 0x9E3779B97F4A7C15
MIX_1, MIX_2 = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB

_SOURCE = r"""
#include <torch/extension.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

static inline uint64_t splitmix64_at(uint64_t seed, uint64_t i) {
  uint64_t z = seed + (i + 1) * @GOLDEN_GAMMA@ULL;
  z = (z ^ (z >> 30)) * @MIX_1@ULL;
  z = (z ^ (z >> 27)) * @MIX_2@ULL;
  return z ^ (z >> 31);
}

// out[j] = x[j] * scale where draw j >= threshold, else 0; draw 2i is the low and draw
// 2i + 1 the high half of SplitMix64's i-th output.
torch::Tensor hash_dropout(torch::Tensor x, int64_t threshold, double scale, int64_t seed) {
  TORCH_CHECK(x.device().is_cpu(), "hash_dropout: CPU tensors only");
  TORCH_CHECK(threshold >= 0 && threshold <= 4294967295LL, "hash_dropout: bad threshold");
  auto in = x.contiguous();
  auto out = torch::empty_like(in);
  const int64_t n = in.numel();
  const uint64_t thr = (uint64_t)threshold;
  const uint64_t s = (uint64_t)seed;
  const float sc = (float)scale;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, in.scalar_type(), "hash_dropout",
                                  [&] {
    const scalar_t* src = in.data_ptr<scalar_t>();
    scalar_t* dst = out.data_ptr<scalar_t>();
    // blocks of 2 * kBlock elements: the draws become a multiplier per element (scalar
    // 64-bit hashing), then one plain loop the compiler vectorises with the dtype casts
    constexpr int64_t kBlock = 512;
    const int64_t pairs = (n + 1) / 2;
    at::parallel_for(0, (pairs + kBlock - 1) / kBlock, 8, [&](int64_t b0, int64_t b1) {
      float mult[2 * kBlock];
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t first = b * kBlock, last = std::min(pairs, first + kBlock);
        for (int64_t i = first; i < last; ++i) {
          const uint64_t r = splitmix64_at(s, (uint64_t)i);
          mult[2 * (i - first)] = (r & 0xFFFFFFFFULL) >= thr ? sc : 0.0f;
          mult[2 * (i - first) + 1] = (r >> 32) >= thr ? sc : 0.0f;
        }
        const int64_t j0 = 2 * first, j1 = std::min(n, 2 * last);
        for (int64_t j = j0; j < j1; ++j) {
          dst[j] = static_cast<scalar_t>(static_cast<float>(src[j]) * mult[j - j0]);
        }
      }
    });
  });
  return out;
}
"""


# the constants above, once: the tests' plain-Python reference reads the same ones
for _name, _value in (("GOLDEN_GAMMA", GOLDEN_GAMMA), ("MIX_1", MIX_1), ("MIX_2", MIX_2)):
    _SOURCE = _SOURCE.replace(f"@{_name}@", hex(_value))


class HashDropoutUnavailable(CppKernelUnavailable):
    """The C++ kernel could not be built (no compiler or ninja)."""


@functools.lru_cache(maxsize=None)
def _kernel() -> Any:
    return load_cpu_kernel("crild_hash_dropout", _SOURCE, ["hash_dropout"],
                           "--dropout-impl hash", "--dropout-impl torch",
                           HashDropoutUnavailable)


def ensure_kernel() -> None:
    """Builds (or loads the cached) kernel now, so a missing compiler fails at model build."""
    _kernel()


def draw_seed() -> int:
    """One seed from torch's CPU generator: what one hash dropout consumes of the stream."""
    return int(torch.randint(-(2 ** 63), 2 ** 63 - 1, (), dtype=torch.int64))


def keep_threshold(p: float) -> int:
    """Draws below this 32-bit threshold drop their element: P(drop) = threshold / 2^32."""
    return min(int(round(p * 2 ** 32)), 2 ** 32 - 1)


class _HashDropoutFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, p: float, seed: int) -> Tensor:  # type: ignore[override]
        ctx.args = (keep_threshold(p), 1.0 / (1.0 - p), seed)
        return _kernel().hash_dropout(x, *ctx.args)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Any:  # type: ignore[override]
        return _kernel().hash_dropout(grad, *ctx.args), None, None


def hash_dropout(x: Tensor, p: float, training: bool = True, seed: int | None = None) -> Tensor:
    """F.dropout's contract with the counter-based mask (``seed``: None draws one)."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"hash_dropout: p must be in [0, 1], got {p}")
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu":
        return F.dropout(x, p, True)
    if p == 1.0:
        return x * 0.0
    return _HashDropoutFn.apply(x, p, draw_seed() if seed is None else seed)


class HashDropout(nn.Dropout):
    """nn.Dropout with the counter-based mask (same ``p``, state dict and repr)."""

    def forward(self, x: Tensor) -> Tensor:
        return hash_dropout(x, self.p, self.training)
