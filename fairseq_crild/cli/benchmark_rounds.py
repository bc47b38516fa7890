"""Interleaved timing rounds, their statistics, and a measured GEMM peak.

A shared machine's load drifts over minutes, so variants timed one after the other see
different machines. Here every round times each variant once (A, B, C, A, B, C, ...): a
slow moment hits the variants of one round alike, and a ratio taken within each round, then
the median over rounds, is far steadier than the ratio of two medians. The timer is a
parameter, so the bookkeeping is testable on fake timings. The GEMM peak is one more entry
of every round (``crild-benchmark`` adds it), so a variant's share of the peak is also a
same-round ratio.
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

Timer = Callable[[Callable[[], None]], float]


def perf_timer(sync: Callable[[], None] = lambda: None) -> Timer:
    """Wall seconds of one call, ``sync`` (e.g. CUDA synchronize) before stopping."""
    def timer(run: Callable[[], None]) -> float:
        sync()
        start = time.perf_counter()
        run()
        sync()
        return time.perf_counter() - start
    return timer


def round_robin(labels: Sequence[str], rounds: int) -> List[Tuple[int, str]]:
    """(round, label) in execution order: every label once per round, in the given order."""
    return [(r, label) for r in range(rounds) for label in labels]


def run_rounds(passes: Dict[str, Callable[[], None]], rounds: int, repeats: int = 1,
               timer: Optional[Timer] = None,
               log: Callable[[str], None] = lambda _msg: None) -> List[Dict[str, Any]]:
    """Times ``passes`` round-robin; one record per round: {round, order, pass_s}.

    Within a round a variant runs ``repeats`` passes back to back (``pass_s[label]`` lists
    them); a round's value for the variant is their median (:func:`round_seconds`).
    ``--interleave 1 --repeats 3`` is the earlier one-variant-after-the-other measurement."""
    timer = timer or perf_timer()
    records: List[Dict[str, Any]] = []
    for r, label in round_robin(list(passes), rounds):
        if r == len(records):
            records.append({"round": r + 1, "order": list(passes), "pass_s": {}})
        times = [timer(passes[label]) for _ in range(repeats)]
        records[r]["pass_s"][label] = times
        log(f"round {r + 1}/{rounds}: {label} {statistics.median(times):.3f} s")
    return records


def round_seconds(records: Sequence[Dict[str, Any]], label: str) -> List[float]:
    """The variant's seconds per pass in each round (median of the round's repeats)."""
    return [statistics.median(rec["pass_s"][label]) for rec in records]


def summary(values: Sequence[float]) -> Dict[str, float]:
    """Median, min, max and quartiles (inclusive method; one value: all equal)."""
    vals = sorted(float(v) for v in values)
    if len(vals) >= 2:
        q1, _, q3 = statistics.quantiles(vals, n=4, method="inclusive")
    else:
        q1 = q3 = vals[0]
    return {"median": statistics.median(vals), "min": vals[0], "max": vals[-1],
            "q1": q1, "q3": q3, "n": len(vals)}


def per_round_ratio(records: Sequence[Dict[str, Any]], work: Dict[str, float], num: str,
                    *den: str) -> Optional[List[float]]:
    """Per round: cost(num) / sum(cost(den)), cost = seconds per unit of ``work`` (examples)
    so variants over different batches compare; None if a variant was not timed."""
    if any(v not in records[0]["pass_s"] for v in (num, *den)):
        return None
    out = []
    for rec in records:
        def cost(v: str) -> float:
            return statistics.median(rec["pass_s"][v]) / work[v]
        out.append(cost(num) / sum(cost(d) for d in den))
    return out
