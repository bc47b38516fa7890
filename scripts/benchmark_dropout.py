"""Dropout mask draws on the CPU, three ways, on one attention-probability tensor (issue 18).

    python scripts/benchmark_dropout.py [--threads 1] [--shape 32,12,67,67] [--steps 20]

Prints ms per forward + backward of: eager ``F.dropout`` (the CPU generator's serial
Bernoulli kernel), ``torch.compile(dynamic=True)`` of it (inductor's own random numbers),
and a counter-based mask (a 32-bit integer hash of each element's index and one seed drawn
from the generator, in eager int32 ops), plus each one's kept fraction. The model keeps
eager dropout: a mask source is only worth changing if it is faster than that.
"""

import argparse
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


def ms_per_step(fn, x: torch.Tensor, p: float, steps: int) -> float:
    for _ in range(3):
        fn(x, p).float().sum().backward()
    start = time.perf_counter()
    for _ in range(steps):
        fn(x, p).float().sum().backward()
    return 1000 * (time.perf_counter() - start) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--shape", default="32,12,67,67", help="B,H,L,L of the probabilities")
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "fp32"])
    ap.add_argument("--p", type=float, default=0.1)
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    x = torch.randn(*map(int, args.shape.split(","))).to(dtype).requires_grad_()
    for name, fn in (("eager", eager), ("compiled", torch.compile(eager, dynamic=True)),
                     ("hashed", hashed)):
        kept = (fn(x, args.p) != 0).float().mean().item()
        print(f"{name}: {ms_per_step(fn, x, args.p, args.steps):.2f} ms forward + backward, "
              f"kept {kept:.4f}", flush=True)


if __name__ == "__main__":
    main()
