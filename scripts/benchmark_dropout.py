"""Dropout mask draws on the CPU, three ways, on one attention-probability tensor (issue 18).

    python scripts/benchmark_dropout.py [--threads 1] [--shape 32,12,67,67] [--steps 20] [--cpp]
        [--no-compile]

Prints ms per forward + backward of: eager ``F.dropout`` (the CPU generator's serial
Bernoulli kernel), ``torch.compile(dynamic=True)`` of it (inductor's own random numbers),
and a counter-based mask (a 32-bit integer hash of each element's index and one seed drawn
from the generator, in eager int32 ops), plus each one's kept fraction. ``--cpp`` adds the
same counter-based mask computed by a small C++ kernel over ``at::parallel_for`` (built
with torch.utils.cpp_extension.load_inline into a temporary folder; needs a C++ compiler):
a prototype of what a parallel mask source would save. Always timed too: the package's
``--dropout-impl hash`` kernel (fairseq_crild/models/hash_dropout.py: mask and product in one
parallel loop, the backward recomputing the mask), forward + backward and forward alone.
"""

import argparse
import tempfile
import time

import torch
import torch.nn.functional as F


def eager(x: torch.Tensor, p: float) -> torch.Tensor:
    return F.dropout(x, p, True)


_index = {}


def hashed(x: torch.Tensor, p: float) -> torch.Tensor:
    n = x.numel()
    if n not in _index:
        _index[n] = torch.arange(n, dtype=torch.int32)
    seed = int(torch.randint(0, 2 ** 31 - 1, ()))
    h = _index[n] * -1640531535 + seed  # wraps in int32
    h = h ^ (h >> 15)
    h = h * 0x2C1B3C6D
    h = h ^ (h >> 12)
    keep = (h & 0xFFFFFF) >= int(p * 2 ** 24)
    return x * keep.view_as(x) * (1 / (1 - p))


_CPP_MASK = r"""
#include <torch/extension.h>
#include <ATen/Parallel.h>
static inline uint64_t mix(uint64_t z) {  // splitmix64's finaliser
  z += 0x9E3779B97F4A7C15ULL;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}
torch::Tensor keep_mask(int64_t n, double p, int64_t seed) {
  auto out = torch::empty({n}, torch::kBool);
  bool* o = out.data_ptr<bool>();
  const uint64_t threshold = (uint64_t)(p * 4294967296.0);
  at::parallel_for(0, (n + 1) / 2, 4096, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {  // two 32-bit draws per hash
      const uint64_t r = mix((uint64_t)seed ^ (uint64_t)i * 0xD1B54A32D192ED03ULL);
      o[2 * i] = (r & 0xFFFFFFFFULL) >= threshold;
      if (2 * i + 1 < n) o[2 * i + 1] = (r >> 32) >= threshold;
    }
  });
  return out;
}
"""


def cpp_masked(build_dir: str):
    from torch.utils.cpp_extension import load_inline
    ext = load_inline("crild_keep_mask", cpp_sources=_CPP_MASK, functions=["keep_mask"],
                      extra_cflags=["-O3"], build_directory=build_dir)

    def drop(x: torch.Tensor, p: float) -> torch.Tensor:
        seed = int(torch.randint(0, 2 ** 62, ()))
        return x * ext.keep_mask(x.numel(), p, seed).view_as(x) * (1 / (1 - p))
    return drop


def ms_per_call(fn, steps: int) -> float:
    for _ in range(3):
        fn()
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    return 1000 * (time.perf_counter() - start) / steps


def ms_per_step(fn, x: torch.Tensor, p: float, steps: int) -> float:
    return ms_per_call(lambda: fn(x, p).float().sum().backward(), steps)


def ms_forward(fn, x: torch.Tensor, p: float, steps: int) -> float:
    with torch.no_grad():
        return ms_per_call(lambda: fn(x, p), steps)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--shape", default="32,12,67,67", help="B,H,L,L of the probabilities")
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "fp32"])
    ap.add_argument("--p", type=float, default=0.1)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--cpp", action="store_true", help="also the C++ parallel mask prototype")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile way")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    x = torch.randn(*map(int, args.shape.split(","))).to(dtype).requires_grad_()
    from fairseq_crild.models.hash_dropout import ensure_kernel, hash_dropout

    ensure_kernel()  # built (or loaded) before any timing
    ways = [("eager", eager)]
    if not args.no_compile:
        ways.append(("compiled", torch.compile(eager, dynamic=True)))
    ways += [("hashed", hashed), ("package --dropout-impl hash", hash_dropout)]
    if args.cpp:
        ways.append(("cpp", cpp_masked(tempfile.mkdtemp(prefix="crild-keep-mask-"))))
    draws = torch.empty(x.shape)
    for threads in sorted({1, args.threads}):  # does the generator's kernel use the threads?
        torch.set_num_threads(threads)
        ms = ms_per_call(lambda: draws.bernoulli_(1 - args.p), args.steps)
        print(f"bernoulli_ draws alone, {threads} thread(s): {ms:.2f} ms", flush=True)
    torch.set_num_threads(args.threads)
    for name, fn in ways:
        kept = (fn(x, args.p) != 0).float().mean().item()
        print(f"{name}: {ms_per_step(fn, x, args.p, args.steps):.2f} ms forward + backward, "
              f"{ms_forward(fn, x, args.p, args.steps):.2f} ms forward alone, kept {kept:.4f}",
              flush=True)


if __name__ == "__main__":
    main()
