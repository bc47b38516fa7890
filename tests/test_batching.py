"""Batches: no example dropped, fresh mixup partners per epoch, drop-last, padding.

References are computed here from the description (plain Python / numpy), not from our
own output: the reverse rule mixes example i of a batch of B with example B-1-i.
"""

import json
import os
import re
import types

import numpy as np
import pytest
import torch
from fairseq.data import data_utils
from fairseq.tasks import FairseqTask

from fairseq_crild.data.batching import (
    BatchingError,
    fresh_pair_batches,
    length_bucket_batches,
    padding_stats,
)
from fairseq_crild.data.binarize import prepare_task
from fairseq_crild.tasks.distill_glue import DistillGlueConfig, DistillGlueTask, GlueDataError
from tests.conftest import write_rte_slice
from tests.helpers_bert import GLUE_DIR

N_TRAIN, N_DEV = 45, 21  # neither a multiple of 8


def rte_train_lengths() -> np.ndarray:
    """Token counts of the real RTE train pairs (words and punctuation, +3 specials, capped at
    128), else a synthetic spread like RTE's (long premise, short hypothesis)."""
    path = os.path.join(GLUE_DIR, "RTE", "train.tsv")
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            rows = [line.rstrip("\n").split("\t") for line in f][1:]
        tok = re.compile(r"\w+|[^\w\s]")
        lengths = [len(tok.findall(r[1])) + len(tok.findall(r[2])) + 3 for r in rows]
        return np.minimum(np.asarray(lengths, dtype=np.int64), 128)
    rng = np.random.default_rng(0)
    return np.minimum(rng.lognormal(3.8, 0.5, size=2490).astype(np.int64) + 12, 128)


def reverse_partners(batches):
    """{example: partner} under the reverse rule, from the batch lists alone."""
    partner = {}
    for b in batches:
        b = [int(x) for x in b]
        for i, x in enumerate(b):
            partner[x] = b[len(b) - 1 - i]
    return partner


def flat(batches):
    return sorted(int(x) for b in batches for x in b)


# ---------------------------------------------------------------------- pure batching
def test_fairseq_drops_a_tail_that_length_buckets_keep():
    idx = np.arange(277, dtype=np.int64)
    sizes = np.full(277, 10)
    theirs = data_utils.batch_by_size(idx, lambda i: 10, max_sentences=32,
                                      required_batch_size_multiple=8)
    # fairseq's --required-batch-size-multiple 8 drops the last 5 of RTE's 277 dev examples
    assert sum(len(b) for b in theirs) == 272
    ours = length_bucket_batches(idx, sizes, None, 32, 8)
    assert flat(ours) == list(range(277))
    assert [len(b) for b in ours] == [32] * 8 + [21]  # the 5 left over join the batch of 16
    # a tail that cannot join its predecessor becomes its own batch
    ours = length_bucket_batches(idx, sizes, None, 16, 8)
    assert flat(ours) == list(range(277)) and [len(b) for b in ours][-2:] == [16, 5]
    # the token budget is respected when the tail joins
    for b in length_bucket_batches(idx, np.arange(277) % 50 + 1, 400, None, 8):
        assert len(b) * (np.arange(277) % 50 + 1)[b].max() <= 400


@pytest.mark.parametrize("n,bsz", [(2490, 32), (45, 8), (44, 7), (45, 7), (5, 32), (1, 4)])
def test_fresh_pairs_every_example_once_and_reverse_rule_pairs_them(n, bsz):
    sizes = np.random.default_rng(n).integers(5, 128, size=n)
    batches, skipped = fresh_pair_batches(sizes, seed=3, epoch=2, batch_size=bsz)
    assert skipped == 0 and flat(batches) == list(range(n))
    lens = [len(b) for b in batches]
    assert lens == [bsz] * (n // bsz) + ([n % bsz] if n % bsz else [])
    partner = reverse_partners(batches)
    selves = [x for x, p in partner.items() if x == p]  # lone examples mix with themselves
    # one per odd-sized batch, no more: odd B -> each full batch; odd n -> the last
    assert len(selves) == sum(s % 2 for s in lens)
    assert all(partner[partner[x]] == x for x in partner)


def test_partners_change_across_epochs_and_ignore_length():
    sizes = rte_train_lengths()
    n = len(sizes)
    maps = [reverse_partners(fresh_pair_batches(sizes, 42, e, 32)[0]) for e in (1, 2, 3)]
    for m1, m2 in ((maps[0], maps[1]), (maps[1], maps[2])):
        same = sum(m1[x] == m2[x] and m1[x] != x for x in range(n))
        assert same <= 0.01 * n  # chance 1/(n-1) each
    own = np.array([sizes[x] for x in range(n)], dtype=np.float64)
    other = np.array([sizes[maps[0][x]] for x in range(n)], dtype=np.float64)
    r = np.corrcoef(own, other)[0, 1]
    assert abs(r) < 0.1, r
    # fairseq's length buckets under the same rule: partners of nearly the same length
    with data_utils.numpy_seed(42):
        order = np.random.permutation(n)
    order = order[np.argsort(sizes[order], kind="mergesort")]
    buckets = reverse_partners(length_bucket_batches(order, sizes, None, 32, 8))
    r_b = np.corrcoef(own, [sizes[buckets[x]] for x in range(n)])[0, 1]
    assert r_b > 0.9, r_b
    # and fresh pairs are reproducible from (seed, epoch) alone
    again = fresh_pair_batches(sizes, 42, 2, 32)[0]
    assert all(np.array_equal(a, b) for a, b in zip(again, fresh_pair_batches(sizes, 42, 2,
                                                                                 32)[0]))
    assert reverse_partners(again) == maps[1]


def test_fresh_pairs_pad_no_more_than_their_longest_pair():
    sizes = rte_train_lengths()
    batches, _ = fresh_pair_batches(sizes, 1, 1, 32)
    mean_len, share = padding_stats(batches, sizes)
    _, share_128 = padding_stats(batches, sizes, pad_to_length=128)
    assert mean_len < 128 and share < share_128
    # batches are sorted by their pairs' longer member: widths never decrease along the list
    widths = [int(sizes[b].max()) for b in batches]
    assert widths == sorted(widths)
    # hand-computed padding share of a two-batch list
    # widths 4 and 3; real tokens (2 + 4) + 3 of 2 x 4 + 1 x 3 = 11 slots
    stats = padding_stats([np.array([0, 1]), np.array([2])], np.array([2, 4, 3]))
    assert stats == pytest.approx((3.5, 2 / 11))


def test_fresh_pairs_under_pad_to_length_are_plain_random_batches():
    sizes = np.random.default_rng(0).integers(5, 128, size=100)
    batches, _ = fresh_pair_batches(sizes, 5, 4, 10, pad_to_length=128)
    # reference: the epoch's permutation, consecutive partners, k = 5 pairs per batch in order
    order = np.random.default_rng([5, 4, 0x46524553]).permutation(100)
    a, b = order[0::2], order[1::2]
    want = [np.concatenate([a[i:i + 5], b[i:i + 5][::-1]]) for i in range(0, 50, 5)]
    assert all(np.array_equal(x, y) for x, y in zip(batches, want)) and len(batches) == 10


def test_fresh_pairs_respect_max_tokens():
    sizes = rte_train_lengths()
    batches, _ = fresh_pair_batches(sizes[:301], 1, 1, None, max_tokens=1024)
    assert flat(batches) == list(range(301))
    for b in batches:
        assert len(b) * sizes[b].max() <= 1024
    with_cap, _ = fresh_pair_batches(sizes[:301], 1, 1, 6, max_tokens=4096)
    assert max(len(b) for b in with_cap) <= 6
    with pytest.raises(BatchingError, match="raise --max-tokens"):
        fresh_pair_batches(np.full(4, 100), 1, 1, None, max_tokens=150)
    with pytest.raises(BatchingError, match="--drop-last-train-batch needs fixed-size"):
        fresh_pair_batches(sizes, 1, 1, 32, max_tokens=4096, drop_last=True)


def test_drop_last_skips_exactly_the_remainder_redrawn_each_epoch():
    sizes = np.random.default_rng(1).integers(5, 60, size=45)
    kept = []
    for epoch in (1, 2):
        batches, skipped = fresh_pair_batches(sizes, 7, epoch, 8, drop_last=True)
        assert skipped == 45 % 8 and [len(b) for b in batches] == [8] * 5
        assert len(set(flat(batches))) == 40
        kept.append(set(flat(batches)))
    assert kept[0] != kept[1]
    batches, skipped = fresh_pair_batches(sizes, 7, 1, 9, drop_last=True)  # 45 = 5 x 9
    assert skipped == 0 and flat(batches) == list(range(45))


# ---------------------------------------------------------------------- through the task
@pytest.fixture(scope="module")
def odd_data(tiny_env, tmp_path_factory):
    """A binarised RTE slice of 45 train / 21 dev pairs (not multiples of 8)."""
    base = tmp_path_factory.mktemp("odd")
    glue = base / "glue"
    write_rte_slice(str(glue / "RTE"), n_train=N_TRAIN, n_dev=N_DEV)
    out = base / "bin"  # beside the GLUE folder: prepare refuses an output inside an input
    prepare_task(str(glue), "RTE", str(tiny_env["ckpt"] / "dict.txt"), str(out))
    return out


def _task(data, splits=("train", "valid"), **kw):
    kw.setdefault("seed", 1)
    task = DistillGlueTask.setup_task(DistillGlueConfig(data=str(data), **kw))
    for split in splits:
        task.load_dataset(split)
    return task


def _iterator(task, split="train", epoch=1, bsz=8, **kw):
    kw.setdefault("required_batch_size_multiple", 8)
    return task.get_batch_iterator(task.dataset(split), max_sentences=bsz, seed=1, epoch=epoch,
                                   disable_iterator_cache=True, **kw)


def _epoch_ids(itr):
    return [b["id"].tolist() for b in itr.next_epoch_itr(shuffle=True) if b]


@pytest.mark.parametrize("layout", ["length-buckets", "fresh-pairs"])
def test_every_dev_and_train_example_counts_whatever_the_multiple(odd_data, layout):
    task = _task(odd_data, train_batches=layout)
    ids = [i for b in _iterator(task, "valid").next_epoch_itr(shuffle=False) for i in b["id"]]
    assert sorted(int(i) for i in ids) == list(range(N_DEV))
    itr = _iterator(task)
    for _ in range(3):  # every example exactly once in each epoch
        assert sorted(i for b in _epoch_ids(itr) for i in b) == list(range(N_TRAIN))


def test_auto_layout_follows_the_criterion(odd_data, monkeypatch):
    task = _task(odd_data)
    assert task.train_layout() == "length-buckets"
    monkeypatch.setattr(FairseqTask, "build_criterion",
                        lambda self, cfg, from_checkpoint=False: types.SimpleNamespace(
                            use_mixup=True))
    task.build_criterion(None)
    assert task.criterion_uses_mixup and task.train_layout() == "fresh-pairs"
    # length buckets are the same batches in every epoch (only their order changes)...
    buckets = _task(odd_data, train_batches="length-buckets")
    itr = _iterator(buckets)
    e1, e2 = (sorted(map(tuple, _epoch_ids(itr))) for _ in range(2))
    assert e1 == e2
    # ...fresh pairs are not
    itr = _iterator(task)
    e1, e2 = (sorted(map(tuple, _epoch_ids(itr))) for _ in range(2))
    assert e1 != e2


def test_resume_and_ranks_see_the_uninterrupted_batches(odd_data):
    task = _task(odd_data, train_batches="fresh-pairs")
    itr = _iterator(task, bsz=6)
    run = [_epoch_ids(itr) for _ in range(3)]
    # a run resumed at epoch 3 builds a fresh iterator at that epoch (fairseq's resume path)
    resumed = _iterator(_task(odd_data, train_batches="fresh-pairs"), epoch=3, bsz=6)
    assert _epoch_ids(resumed) == run[2]
    # mid-epoch: fairseq restores the iterator from its state_dict and fast-forwards
    itr = _iterator(task, epoch=2, bsz=6)
    first = itr.next_epoch_itr(shuffle=True)
    taken = [next(first)["id"].tolist() for _ in range(3)]
    state = itr.state_dict()
    again = _iterator(_task(odd_data, train_batches="fresh-pairs"), epoch=2, bsz=6)
    again.load_state_dict(state)
    rest = [b["id"].tolist() for b in again.next_epoch_itr(shuffle=True) if b]
    assert taken + rest == run[1]
    # two ranks: one global batch list, each rank takes every other batch
    shards = [_iterator(_task(odd_data, train_batches="fresh-pairs"), epoch=2, bsz=6,
                        num_shards=2, shard_id=r) for r in (0, 1)]
    per_rank = [_epoch_ids(s) for s in shards]
    interleaved = [b for pair in zip(*per_rank) for b in pair]
    assert interleaved + per_rank[0][len(per_rank[1]):] == run[1]


def test_drop_last_through_the_task(odd_data, caplog):
    for layout in ("length-buckets", "fresh-pairs"):
        task = _task(odd_data, train_batches=layout, drop_last_train_batch=True)
        itr = _iterator(task)
        with caplog.at_level("INFO"):
            epochs = [_epoch_ids(itr) for _ in range(2)]
        for batches in epochs:
            assert [len(b) for b in batches] == [8] * (N_TRAIN // 8)
            assert len({i for b in batches for i in b}) == N_TRAIN - N_TRAIN % 8
        assert {i for b in epochs[0] for i in b} != {i for b in epochs[1] for i in b}
        assert f"skipped {N_TRAIN % 8} of {N_TRAIN} training examples" in caplog.text
        with pytest.raises(BatchingError, match="--drop-last-train-batch needs fixed-size"):
            task.get_batch_iterator(task.dataset("train"), max_tokens=512, max_sentences=8,
                                    disable_iterator_cache=True)
    # off: valid is never affected
    task = _task(odd_data, drop_last_train_batch=True)
    ids = [i for b in _iterator(task, "valid").next_epoch_itr(shuffle=False) for i in b["id"]]
    assert len(ids) == N_DEV


def test_pad_every_batch_to_reaches_loaded_datasets(odd_data):
    task = _task(odd_data, train_batches="fresh-pairs")
    dynamic = next(_iterator(task, "valid").next_epoch_itr(shuffle=False))
    assert dynamic["net_input"]["src_tokens"].size(1) < 128
    task.pad_every_batch_to(128)
    for split in ("train", "valid"):
        for batch in _iterator(task, split).next_epoch_itr(shuffle=False):
            assert batch["net_input"]["src_tokens"].shape[1] == 128
            assert batch["net_input"]["token_type_ids"].shape[1] == 128
    task.load_dataset("test")  # loaded afterwards: padded too
    test = task.dataset("test")
    assert test.collater([test[0]])["net_input"]["src_tokens"].shape[1] == 128
    with pytest.raises(GlueDataError, match="lower --max-positions"):
        task.pad_every_batch_to(64)
    task.pad_every_batch_to(0)
    assert next(_iterator(task, "valid").next_epoch_itr(shuffle=False))["net_input"][
        "src_tokens"].shape == dynamic["net_input"]["src_tokens"].shape
    assert torch.equal(next(_iterator(task, "valid").next_epoch_itr(shuffle=False))["id"],
                       dynamic["id"])


def test_epoch_layout_benchmark_runs_on_the_tiny_data(tiny_env, tmp_path):
    from scripts.benchmark_epoch_layout import main

    out = tmp_path / "layout.json"
    assert main(["--data", str(tiny_env["data"]), "--base", str(tiny_env["ckpt"]),
                 "--student-layers", "2", "--batch-size", "8", "--steps", "2", "--rounds", "1",
                 "--threads", "1", "--work-dir", str(tmp_path / "work"),
                 "--json", str(out)]) == 0
    layouts = json.loads(out.read_text())["layouts"]
    assert list(layouts) == ["length-buckets", "fresh-pairs", "pad-128"]
    assert {v["epoch_batches"] for v in layouts.values()} == {48 // 8}
    assert layouts["pad-128"]["mean_padded_length"] == 128
    assert (layouts["length-buckets"]["padding_share"] <= layouts["fresh-pairs"]["padding_share"]
            < layouts["pad-128"]["padding_share"])
    assert layouts["length-buckets"]["epoch_s_vs_length_buckets"] == 1.0
