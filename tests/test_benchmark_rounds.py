"""The benchmark's bookkeeping on fake timings and hand-computed FLOPs: interleaving order,
medians, same-round ratios, the FLOP formula. No real timing is asserted anywhere."""

import statistics

import pytest

from fairseq_crild.cli.benchmark_flops import (
    PASSES,
    EncoderShape,
    Passes,
    batch_flops,
    forward_flops,
    gemm_flops,
    token_layer_flops,
    variant_flops,
)
from fairseq_crild.cli.benchmark_rounds import (
    per_round_ratio,
    round_robin,
    round_seconds,
    run_rounds,
    summary,
)


class FakeTimer:
    """Returns scripted seconds per label, in call order, and records the order of calls."""

    def __init__(self, seconds):
        self.seconds = {k: list(v) for k, v in seconds.items()}
        self.calls = []

    def __call__(self, run):
        label = run()
        self.calls.append(label)
        return self.seconds[label].pop(0)


def _passes(labels):
    return {label: (lambda label=label: label) for label in labels}


def test_round_robin_order():
    assert round_robin(["a", "b", "c"], 2) == [(0, "a"), (0, "b"), (0, "c"),
                                               (1, "a"), (1, "b"), (1, "c")]


def test_rounds_run_interleaved_and_keep_every_pass():
    timer = FakeTimer({"a": [1, 2, 3, 4], "b": [10, 20, 30, 40]})
    records = run_rounds(_passes(["a", "b"]), rounds=2, repeats=2, timer=timer)
    # each variant's repeats back to back, the variants round-robin
    assert timer.calls == ["a", "a", "b", "b", "a", "a", "b", "b"]
    assert records == [
        {"round": 1, "order": ["a", "b"], "pass_s": {"a": [1, 2], "b": [10, 20]}},
        {"round": 2, "order": ["a", "b"], "pass_s": {"a": [3, 4], "b": [30, 40]}}]
    assert round_seconds(records, "a") == [1.5, 3.5]


def test_summary_and_same_round_ratios_match_plain_python():
    a = [2.0, 4.0, 3.0, 8.0, 2.5]
    b = [1.0, 3.0, 1.5, 3.0, 1.0]
    c = [0.5, 0.5, 1.0, 1.0, 0.5]
    timer = FakeTimer({"a": a, "b": b, "c": c})
    records = run_rounds(_passes(["a", "b", "c"]), rounds=5, timer=timer)
    s = summary(round_seconds(records, "a"))
    assert s["median"] == 3.0 and s["min"] == 2.0 and s["max"] == 8.0 and s["n"] == 5
    assert (s["q1"], s["q3"]) == (2.5, 4.0)  # inclusive quartiles of 2, 2.5, 3, 4, 8
    assert summary([7.0]) == {"median": 7.0, "min": 7.0, "max": 7.0, "q1": 7.0, "q3": 7.0,
                              "n": 1}
    # per round, per example: a ran 2 examples, b and c 4
    work = {"a": 2, "b": 4, "c": 4}
    got = per_round_ratio(records, work, "a", "b", "c")
    want = [(x / 2) / (y / 4 + z / 4) for x, y, z in zip(a, b, c)]
    assert got == pytest.approx(want)
    assert statistics.median(got) == pytest.approx(statistics.median(want))
    # the median of same-round ratios is not the ratio of medians
    assert statistics.median(want) != pytest.approx(
        (statistics.median(a) / 2) / (statistics.median(b) / 4 + statistics.median(c) / 4))
    assert per_round_ratio(records, work, "a", "missing") is None


def test_flop_formula_by_hand():
    # h = 4, f = 8: 2 x (4 x 16 + 2 x 4 x 8) = 2 x (64 + 64) = 256, plus 4 x L x 4 = 16 L
    assert token_layer_flops(4, 8, 3) == 256 + 48
    teacher, student = EncoderShape(2, 4, 8), EncoderShape(1, 4, 8)
    lengths, width = [3, 1], 5
    # useful: 3 tokens at L=3, 1 token at L=1, per layer
    useful_layer = 3 * (256 + 48) + 1 * (256 + 16)
    assert forward_flops(teacher, lengths) == 2 * useful_layer
    # executed: 2 rows of 5 tokens at L=5
    executed_layer = 2 * 5 * (256 + 80)
    assert forward_flops(student, lengths, width) == executed_layer
    # teacher forward + 3 x student forward
    cr = Passes(1, 3)
    assert batch_flops(cr, teacher, student, lengths) == 2 * useful_layer + 3 * useful_layer
    got = variant_flops("cr_ild_step", teacher, student, [(lengths, width), ([2], 2)])
    second = 2 * (256 + 32)
    assert got == {"useful": 5 * useful_layer + 5 * second,
                   "executed": 5 * executed_layer + 5 * second}
    assert variant_flops("kd_cached_step", teacher, student, [(lengths, width)])[
        "useful"] == 3 * useful_layer
    assert variant_flops("adam_update", teacher, student, [(lengths, width)]) is None
    assert gemm_flops(3) == 54


def test_every_cr_ild_step_counts_as_the_issue_defines_it():
    """Teacher forward + 3 x student forward, with or without the clean pass or padding."""
    for name in ("cr_ild_step", "cr_ild_no_clean_step", "cr_ild_fresh_step",
                 "cr_ild_pad128_step", "kd_step"):
        assert PASSES[name] == Passes(1, 3), name
