"""The masked relation log-softmax and relation KL in one C++ pass each (``--relation-kl-impl
cpp``).

Why: in eager PyTorch the Q/K/V relation KL of a CR-ILD step is a chain of elementwise
passes over the (B, R, L, L) relations (where, log_softmax, exp, sub, mul, sum and their
backwards), each reading and writing the whole tensor: a quarter of a bf16 step on the CPU
(docs/results.md, issue 18). Here each side's masked log-softmax and each KL term is one
loop over rows (``at::parallel_for``), a row of at most a few hundred floats staying in
cache between its passes, masked keys and padded query rows skipped; the backwards recompute
the probabilities instead of saving them. Values are those of
:func:`fairseq_crild.distill.losses.relation_log_probs` and
:func:`~fairseq_crild.distill.losses.relation_kl_from_log_probs` up to float32 rounding (the
exponential is Cephes' polynomial, the sums run in another order), not bit for bit, so the
option is off by default.

Built at first use (about a minute; :mod:`fairseq_crild.cpp_build`): needs a C++ compiler
and ninja. float32 CPU tensors only; the callers keep torch's path for anything else.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import Tensor

from fairseq_crild.cpp_build import CppKernelUnavailable, load_cpu_kernel
from fairseq_crild.distill import losses

#: the choices of ``--relation-kl-impl``
RELATION_KL_IMPLS = ("torch", "cpp")

_SOURCE = r"""
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <cmath>
#include <cstring>
#include <limits>

// exp(x) for x <= 0 (log-probabilities, x - max): Cephes' expf, branch-free so that the
// loops calling it vectorise; 0 below the smallest normal float's logarithm.
static inline __attribute__((always_inline)) float exp_nonpos(float x) {
  const float lo = -87.3365447504f;
  const float xc = x < lo ? lo : (x > 0.0f ? 0.0f : x);
  // n = round(x / ln 2) by the 1.5 * 2^23 trick (floorf does not vectorise without
  // -ffast-math, which this build avoids)
  const float fx = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  float r = xc - fx * 0.693359375f;
  r = r + fx * 2.12194440e-4f;
  const float z = r * r;
  float y = 1.9875691500e-4f;
  y = y * r + 1.3981999507e-3f;
  y = y * r + 8.3334519073e-3f;
  y = y * r + 4.1665795894e-2f;
  y = y * r + 1.6666665459e-1f;
  y = y * r + 5.0000001201e-1f;
  y = y * z + r + 1.0f;
  const int32_t bits = ((int32_t)fx + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(float));
  return x < lo ? 0.0f : y * scale;
}

static const float kNeg = std::numeric_limits<float>::lowest();

static void check(const torch::Tensor& x, const torch::Tensor& keep, const char* what) {
  TORCH_CHECK(x.device().is_cpu() && x.scalar_type() == at::kFloat && x.dim() == 4,
              what, ": float32 CPU (B, R, L, L) tensors only");
  TORCH_CHECK(x.size(2) == x.size(3), what, ": relations must be square in L");
  TORCH_CHECK(keep.dim() == 2 && keep.size(0) == x.size(0) && keep.size(1) == x.size(2)
              && keep.scalar_type() == at::kByte, what, ": keep must be uint8 (B, L)");
}

// Rows are (b, r, i); a block of rows costs about rows x L: grain of ~4k elements.
static int64_t grain(int64_t L) { return std::max<int64_t>(1, 4096 / std::max<int64_t>(L, 1)); }

// log_softmax over the kept keys of each row; masked keys get the lowest float
// (probability exactly 0), a row without kept keys (or whose kept keys all hold the lowest
// float) the uniform -log(L) (as torch's log_softmax of a row filled with that value).
torch::Tensor masked_log_softmax(torch::Tensor x, torch::Tensor keep) {
  check(x, keep, "masked_log_softmax");
  auto in = x.contiguous();
  auto kp = keep.contiguous();
  auto out = torch::empty_like(in);
  const int64_t R = in.size(1), L = in.size(2), rows = in.size(0) * R * L;
  const float* src = in.data_ptr<float>();
  const uint8_t* km = kp.data_ptr<uint8_t>();
  float* dst = out.data_ptr<float>();
  at::parallel_for(0, rows, grain(L), [=](int64_t r0, int64_t r1) {
    for (int64_t row = r0; row < r1; ++row) {
      const uint8_t* __restrict k = km + (row / (R * L)) * L;
      const float* __restrict a = src + row * L;
      float* __restrict o = dst + row * L;
      float m = kNeg;  // stays the lowest float only when no key is kept
#pragma omp simd reduction(max : m)
      for (int64_t j = 0; j < L; ++j) {
        const float v = k[j] ? a[j] : kNeg;
        m = v > m ? v : m;
      }
      if (m == kNeg) {
        const float u = -std::log((float)L);
        for (int64_t j = 0; j < L; ++j) o[j] = u;
        continue;
      }
      float s = 0.0f;
#pragma omp simd reduction(+ : s)
      for (int64_t j = 0; j < L; ++j) s += k[j] ? exp_nonpos(a[j] - m) : 0.0f;
      const float lse = m + std::log(s);
#pragma omp simd
      for (int64_t j = 0; j < L; ++j) o[j] = k[j] ? a[j] - lse : kNeg;
    }
  });
  return out;
}

// d x = G - p * sum(G) over kept keys, 0 on masked keys (their inputs do not reach the
// output); p recomputed from the output.
torch::Tensor masked_log_softmax_backward(torch::Tensor grad, torch::Tensor out,
                                          torch::Tensor keep) {
  check(out, keep, "masked_log_softmax_backward");
  auto g = grad.contiguous();
  auto o = out.contiguous();
  auto kp = keep.contiguous();
  auto dx = torch::empty_like(o);
  const int64_t R = o.size(1), L = o.size(2), rows = o.size(0) * R * L;
  const float* gp = g.data_ptr<float>();
  const float* op = o.data_ptr<float>();
  const uint8_t* km = kp.data_ptr<uint8_t>();
  float* dp = dx.data_ptr<float>();
  at::parallel_for(0, rows, grain(L), [&](int64_t r0, int64_t r1) {
    for (int64_t row = r0; row < r1; ++row) {
      const uint8_t* k = km + (row / (R * L)) * L;
      const float* gr = gp + row * L;
      const float* orow = op + row * L;
      float* d = dp + row * L;
      float s = 0.0f;
#pragma omp simd reduction(+ : s)
      for (int64_t j = 0; j < L; ++j) s += k[j] ? gr[j] : 0.0f;
#pragma omp simd
      for (int64_t j = 0; j < L; ++j) d[j] = k[j] ? gr[j] - exp_nonpos(orow[j]) * s : 0.0f;
    }
  });
  return dx;
}

// Both sides of a KL term and the mask, contiguous, with what the loops over rows need.
struct KlInputs {
  torch::Tensor s, t, kp;
  int64_t B, R, L, rows;
  const float* sp;
  const float* tp;
  const uint8_t* km;
  KlInputs(const torch::Tensor& logp_s, const torch::Tensor& logp_t, const torch::Tensor& keep)
      : s(logp_s.contiguous()), t(logp_t.contiguous()), kp(keep.contiguous()),
        B(s.size(0)), R(s.size(1)), L(s.size(2)), rows(B * R * L),
        sp(s.data_ptr<float>()), tp(t.data_ptr<float>()), km(kp.data_ptr<uint8_t>()) {}
  // the rows the mean runs over: R per kept query (at least 1)
  double kept_rows() const {
    int64_t n = 0;
    for (int64_t i = 0; i < B * L; ++i) n += km[i] != 0;
    return std::max<double>(1.0, (double)(n * R));
  }
};

// mean over the rows of kept queries of sum_j p_t (log p_t - log p_s), kept keys only;
// the per-row sums are added in one fixed order (the same value whatever the threads).
torch::Tensor relation_kl(torch::Tensor logp_s, torch::Tensor logp_t, torch::Tensor keep) {
  check(logp_s, keep, "relation_kl");
  check(logp_t, keep, "relation_kl");
  TORCH_CHECK(logp_s.sizes() == logp_t.sizes(), "relation_kl: student and teacher differ");
  const KlInputs in(logp_s, logp_t, keep);
  const int64_t R = in.R, L = in.L, rows = in.rows;
  const float* sp = in.sp;
  const float* tp = in.tp;
  const uint8_t* km = in.km;
  std::vector<float> per_row(rows, 0.0f);
  float* out = per_row.data();
  at::parallel_for(0, rows, grain(L), [=](int64_t r0, int64_t r1) {
    for (int64_t row = r0; row < r1; ++row) {
      const int64_t b = row / (R * L), i = row % L;
      const uint8_t* k = km + b * L;
      if (!k[i]) continue;
      const float* ls = sp + row * L;
      const float* lt = tp + row * L;
      float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
      for (int64_t j = 0; j < L; ++j) acc += k[j] ? exp_nonpos(lt[j]) * (lt[j] - ls[j]) : 0.0f;
      out[row] = acc;
    }
  });
  double total = 0.0;
  for (int64_t row = 0; row < rows; ++row) total += per_row[row];
  return torch::tensor((float)(total / in.kept_rows()), in.s.options());
}

// d log p_s = -g/n p_t and d log p_t = g/n p_t (log p_t - log p_s + 1) on the kept keys of
// kept rows, 0 elsewhere; an undefined tensor for a side that needs no gradient.
std::vector<torch::Tensor> relation_kl_backward(torch::Tensor grad, torch::Tensor logp_s,
                                                torch::Tensor logp_t, torch::Tensor keep,
                                                bool need_s, bool need_t) {
  const KlInputs in(logp_s, logp_t, keep);
  const int64_t R = in.R, L = in.L, rows = in.rows;
  const float* sp = in.sp;
  const float* tp = in.tp;
  const uint8_t* km = in.km;
  const float scale = (float)(grad.item<double>() / in.kept_rows());
  torch::Tensor gs, gt;
  if (need_s) gs = torch::empty_like(in.s);
  if (need_t) gt = torch::empty_like(in.t);
  float* gsp = need_s ? gs.data_ptr<float>() : nullptr;
  float* gtp = need_t ? gt.data_ptr<float>() : nullptr;
  at::parallel_for(0, rows, grain(L), [=](int64_t r0, int64_t r1) {
    const float cc = scale;  // a local: through the closure, each store could alias it
    for (int64_t row = r0; row < r1; ++row) {
      const int64_t b = row / (R * L), i = row % L;
      const uint8_t* k = km + b * L;
      const float* ls = sp + row * L;
      const float* lt = tp + row * L;
      if (!k[i]) {
        if (gsp) std::fill(gsp + row * L, gsp + (row + 1) * L, 0.0f);
        if (gtp) std::fill(gtp + row * L, gtp + (row + 1) * L, 0.0f);
        continue;
      }
      if (gsp) {
        float* d = gsp + row * L;
#pragma omp simd
        for (int64_t j = 0; j < L; ++j) d[j] = k[j] ? -cc * exp_nonpos(lt[j]) : 0.0f;
      }
      if (gtp) {
        float* d = gtp + row * L;
#pragma omp simd
        for (int64_t j = 0; j < L; ++j)
          d[j] = k[j] ? cc * exp_nonpos(lt[j]) * (lt[j] - ls[j] + 1.0f) : 0.0f;
      }
    }
  });
  return {gs, gt};
}

// exp_nonpos on a tensor: what the tests compare with torch.exp.
torch::Tensor exp_nonpos_tensor(torch::Tensor x) {
  auto in = x.contiguous();
  auto out = torch::empty_like(in);
  const float* a = in.data_ptr<float>();
  float* o = out.data_ptr<float>();
  const int64_t n = in.numel();
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) o[j] = exp_nonpos(a[j]);
  return out;
}
"""

_FUNCTIONS = ("masked_log_softmax", "masked_log_softmax_backward", "relation_kl",
              "relation_kl_backward", "exp_nonpos_tensor")


class RelationKernelUnavailable(CppKernelUnavailable):
    """The fused relation KL's C++ kernel could not be built."""


@functools.lru_cache(maxsize=None)
def kernel() -> Any:
    """The compiled module (built once per process and CPU kind)."""
    return load_cpu_kernel("crild_relation_kl", _SOURCE, _FUNCTIONS, "--relation-kl-impl cpp",
                           "--relation-kl-impl torch", RelationKernelUnavailable)


def _keep_bytes(keep: Tensor) -> Tensor:
    return keep.to(torch.uint8).contiguous()


class _MaskedLogSoftmax(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, keep: Tensor) -> Tensor:  # type: ignore[override]
        out = kernel().masked_log_softmax(x, keep)
        ctx.save_for_backward(out, keep)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Any:  # type: ignore[override]
        out, keep = ctx.saved_tensors
        return kernel().masked_log_softmax_backward(grad.float(), out, keep), None


class _RelationKl(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, logp_s: Tensor, logp_t: Tensor, keep: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(logp_s, logp_t, keep)
        return kernel().relation_kl(logp_s, logp_t, keep)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Any:  # type: ignore[override]
        logp_s, logp_t, keep = ctx.saved_tensors
        need_s, need_t = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        g_s, g_t = kernel().relation_kl_backward(grad, logp_s, logp_t, keep, need_s, need_t)
        return (g_s if need_s else None), (g_t if need_t else None), None


def masked_log_softmax(x: Tensor, keep: Tensor) -> Tensor:
    """float32 log-softmax over the keys of (B, R, L, L) relations, keys where ``keep``
    (B, L) is False at the lowest float (probability exactly 0)."""
    return _MaskedLogSoftmax.apply(x.float(), _keep_bytes(keep))


def relation_kl(logp_s: Tensor, logp_t: Tensor, keep: Tensor) -> Tensor:
    """KL(p_t || p_s) summed over kept keys and averaged over the rows of kept queries."""
    return _RelationKl.apply(logp_s, logp_t, _keep_bytes(keep))


def usable(*tensors: Tensor) -> bool:
    """Whether the kernel takes these tensors (float32 on the CPU)."""
    return all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors)


def relation_log_probs(x: Tensor, num_relation_heads: int, keep: Tensor,
                       who: str = "input") -> Tensor:
    """:func:`fairseq_crild.distill.losses.relation_log_probs` with the C++ masked
    log-softmax (torch's path for tensors the kernel does not take)."""
    if x.device.type != "cpu":  # decided before the product, so it is computed once
        return losses.relation_log_probs(x, num_relation_heads, keep, who)
    return masked_log_softmax(losses._self_relations(x, num_relation_heads, who, keep), keep)


def relation_kl_from_log_probs(logp_s: Tensor, logp_t: Tensor, keep: Tensor) -> Tensor:
    """:func:`fairseq_crild.distill.losses.relation_kl_from_log_probs` in one C++ pass
    (torch's path for tensors the kernel does not take)."""
    if usable(logp_s, logp_t):
        return relation_kl(logp_s, logp_t, keep)
    return losses.relation_kl_from_log_probs(logp_s, logp_t, keep)


def relation_functions(impl: str) -> tuple[losses.RelationLogProbs, losses.RelationDivergence]:
    """(one side's log-probabilities, the KL from both) for ``--relation-kl-impl impl``."""
    if impl == "torch":
        return losses.relation_log_probs, losses.relation_kl_from_log_probs
    if impl == "cpp":
        return relation_log_probs, relation_kl_from_log_probs
    raise ValueError(f"--relation-kl-impl {impl!r}: choose {', '.join(RELATION_KL_IMPLS)}")
