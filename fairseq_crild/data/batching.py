"""How training and evaluation examples are grouped into batches.

Two facts of fairseq shape this module:

* ``data_utils.batch_by_size(..., required_batch_size_multiple=8)`` (fairseq's default)
  silently DROPS its final batch when that batch's size is not a multiple of 8, and batches
  are sorted by length, so the longest examples of every split never count (RTE dev: 272 of
  277). :func:`length_bucket_batches` keeps that tail.
* fairseq builds the length buckets once per run and only shuffles their order per epoch,
  so under mixup's reverse rule (example i of a batch mixed with example B-1-i, the
  authors' rule) an example meets the same similar-length partner in every epoch.
  :func:`fresh_pair_batches` draws new random partners from the whole split every epoch,
  from (seed, epoch) alone, so a resumed run and every data-parallel rank (which all see
  one global batch list that fairseq then shards) build the same batches.

Everything here is plain numpy on sizes and indices; the task wires it into fairseq's
``EpochBatchIterator`` (a callable ``batch_sampler(dataset, epoch)``, which fairseq calls
again at every new epoch, including the epoch a checkpoint resumes at).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np

from fairseq_crild.errors import CrildError

logger = logging.getLogger(__name__)

LAYOUTS = ("auto", "length-buckets", "fresh-pairs")
_PAIR_STREAM = 0x46524553  # keeps the pairing draw apart from any other (seed, epoch) stream


class BatchingError(CrildError, ValueError):
    """The batching options contradict each other."""


def epoch_rng(seed: int, epoch: int, stream: int = _PAIR_STREAM) -> np.random.Generator:
    """One generator per (seed, epoch): independent of the process, its rank and history."""
    if seed < 0 or epoch < 0:
        raise BatchingError(f"seed and epoch must be >= 0 for batch draws, got seed {seed}, "
                            f"epoch {epoch}")
    return np.random.default_rng([int(seed), int(epoch), stream])


def length_bucket_batches(indices: np.ndarray, sizes: np.ndarray, max_tokens: Optional[int],
                          max_sentences: Optional[int],
                          required_batch_size_multiple: int = 1) -> List[np.ndarray]:
    """fairseq's ``batch_by_size`` over ``indices`` (already length-ordered), but a final
    batch whose size is not a multiple of ``required_batch_size_multiple`` is kept, not
    dropped: every index appears in exactly one batch."""
    from fairseq.data import data_utils

    indices = np.asarray(indices, dtype=np.int64)
    if len(indices) == 0:
        return []
    batches = data_utils.batch_by_size(
        indices, None, num_tokens_vec=np.asarray(sizes, dtype=np.int64)[indices],
        max_tokens=max_tokens, max_sentences=max_sentences,
        required_batch_size_multiple=required_batch_size_multiple)
    batches = list(batches)
    covered = sum(len(b) for b in batches)
    if covered < len(indices):  # fairseq dropped exactly this tail (its last batch)
        tail = indices[covered:]
        if batches and _fits(np.concatenate([batches[-1], tail]), sizes, max_tokens,
                             max_sentences):
            batches[-1] = np.concatenate([batches[-1], tail])  # e.g. 24 + 2 of a batch of 32
        else:
            batches.append(tail)
    return batches


def _fits(batch: np.ndarray, sizes: np.ndarray, max_tokens: Optional[int],
          max_sentences: Optional[int]) -> bool:
    if max_sentences and len(batch) > max_sentences:
        return False
    return not max_tokens or len(batch) * int(np.asarray(sizes)[batch].max()) <= max_tokens


def drop_remainder(order: np.ndarray, batch_size: int) -> Tuple[np.ndarray, int]:
    """The authors' drop-last: of a randomly ordered epoch, the last ``len % batch_size``
    examples (their incomplete final batch) are skipped. Returns (kept, number skipped)."""
    skipped = len(order) % batch_size
    return (order[: len(order) - skipped] if skipped else order), skipped


@dataclass
class PairLayout:
    """One epoch's random pairing: example ``a[i]`` is mixed with ``b[i]``; ``single`` holds
    the examples without a partner (an odd count), which a batch mixes with each other or,
    alone in the middle of a batch, with itself (a clean example)."""

    a: np.ndarray
    b: np.ndarray
    single: np.ndarray


def draw_pairs(order: np.ndarray, n_pairs: int) -> PairLayout:
    """Consecutive members of a random order become partners: (o0, o1), (o2, o3), ..."""
    paired = order[: 2 * n_pairs]
    return PairLayout(a=paired[0::2], b=paired[1::2], single=order[2 * n_pairs:])


def lay_out(a: Sequence[int], b: Sequence[int], single: Sequence[int] = ()) -> np.ndarray:
    """``[a_1..a_k, s_1..s_m, b_k..b_1]``: the reverse rule (i <-> B-1-i) then mixes a_i with
    b_i, and s_j with s_{m+1-j} (an odd middle one with itself)."""
    return np.concatenate([np.asarray(a, dtype=np.int64), np.asarray(single, dtype=np.int64),
                           np.asarray(b, dtype=np.int64)[::-1]])


def _fixed_size_batches(pairs: PairLayout, key_pair: np.ndarray, key_single: np.ndarray,
                        n: int, batch_size: int) -> List[np.ndarray]:
    """Every batch holds ``batch_size`` examples but the last (``n % batch_size``)."""
    sizes = [batch_size] * (n // batch_size) + ([n % batch_size] if n % batch_size else [])
    p_order = np.argsort(key_pair, kind="stable")
    s_order = np.argsort(key_single, kind="stable")
    batches, p, s = [], 0, 0
    for size in sizes:
        k = size // 2
        take = p_order[p:p + k]
        singles = pairs.single[s_order[s:s + size % 2]]
        batches.append(lay_out(pairs.a[take], pairs.b[take], singles))
        p, s = p + k, s + size % 2
    return batches


def _token_budget_batches(pairs: PairLayout, sizes: np.ndarray, key_pair: np.ndarray,
                          key_single: np.ndarray, max_tokens: int,
                          max_sentences: Optional[int], pad_to: int) -> List[np.ndarray]:
    """Greedy over units (pairs, then lone examples) in ``key`` order: a batch grows while
    its examples x its longest (padded) length stay within ``max_tokens`` and its example
    count within ``max_sentences``."""
    units = [(key_pair[i], 0, i) for i in range(len(pairs.a))]
    units += [(key_single[j], 1, j) for j in range(len(pairs.single))]
    units.sort(key=lambda u: (u[0], u[1]))
    batches: List[np.ndarray] = []
    cur_a: List[int] = []
    cur_b: List[int] = []
    cur_s: List[int] = []
    longest = 0

    def flush() -> None:
        if cur_a or cur_s:
            batches.append(lay_out(cur_a, cur_b, cur_s))

    for _, is_single, i in units:
        members = [int(pairs.single[i])] if is_single else [int(pairs.a[i]), int(pairs.b[i])]
        length = max(pad_to, max(int(sizes[m]) for m in members))
        if length * len(members) > max_tokens:
            raise BatchingError(f"--max-tokens {max_tokens} cannot hold one mixup pair of "
                                f"length {length}: raise --max-tokens to at least "
                                f"{length * len(members)}")
        count = 2 * len(cur_a) + len(cur_s)
        new_count, new_long = count + len(members), max(longest, length)
        if count and (new_count * new_long > max_tokens
                      or (max_sentences and new_count > max_sentences)):
            flush()
            cur_a, cur_b, cur_s, longest = [], [], [], 0
            new_long = length
        if is_single:
            cur_s.append(members[0])
        else:
            cur_a.append(members[0])
            cur_b.append(members[1])
        longest = new_long
    flush()
    return batches


def fresh_pair_batches(sizes: np.ndarray, seed: int, epoch: int, batch_size: Optional[int],
                       max_tokens: Optional[int] = None, drop_last: bool = False,
                       pad_to_length: int = 0) -> Tuple[List[np.ndarray], int]:
    """One epoch of training batches with fresh random mixup partners.

    All examples are permuted with (seed, epoch); with ``drop_last`` the last
    ``n % batch_size`` of that permutation are skipped (the authors' incomplete last batch);
    consecutive examples become partners; pairs are sorted by their longer member (random
    tie order), so a batch is padded to its longest pair, and each batch is laid out as
    :func:`lay_out` so the reverse rule mixes exactly the drawn partners. With
    ``pad_to_length`` lengths do not matter: pairs stay in random order, i.e. batches are
    plain random batches as the authors draw them.

    Odd counts: with an odd number of examples one is left without a partner; with an odd
    ``batch_size`` each full batch holds (B-1)/2 pairs and one lone example in its middle
    (which the reverse rule mixes with itself, so it trains clean). Lone examples are
    sorted by length too and go to the batches in order.

    Returns (batches, number of examples skipped).
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    n = len(sizes)
    if batch_size is None and max_tokens is None:
        raise BatchingError("--train-batches fresh-pairs needs --batch-size or --max-tokens")
    if drop_last and (batch_size is None or max_tokens is not None):
        raise BatchingError("--drop-last-train-batch needs fixed-size batches: give "
                            "--batch-size and no --max-tokens")
    rng = epoch_rng(seed, epoch)
    order = rng.permutation(n).astype(np.int64)
    skipped = 0
    if drop_last:
        order, skipped = drop_remainder(order, batch_size)
    m = len(order)
    if max_tokens is None:  # fixed sizes: (B // 2) pairs and B % 2 lone examples per batch
        full, rest = divmod(m, batch_size)
        n_single = full * (batch_size % 2) + rest % 2
    else:
        n_single = m % 2
    pairs = draw_pairs(order, (m - n_single) // 2)
    pad_to = int(pad_to_length or 0)
    if pad_to:  # random order: batches as random as the authors' (lengths do not matter)
        key_pair = np.arange(len(pairs.a))
        key_single = np.arange(len(pairs.single))
    else:
        key_pair = np.maximum(sizes[pairs.a], sizes[pairs.b])
        key_single = sizes[pairs.single]
    if max_tokens is None:
        batches = _fixed_size_batches(pairs, key_pair, key_single, m, batch_size)
    else:
        batches = _token_budget_batches(pairs, sizes, key_pair, key_single, int(max_tokens),
                                        batch_size, pad_to)
    return batches, skipped


def padding_stats(batches: Sequence[np.ndarray], sizes: np.ndarray,
                  pad_to_length: int = 0) -> Tuple[float, float]:
    """(mean padded length per batch, share of padded positions) of a batch list."""
    sizes = np.asarray(sizes, dtype=np.int64)
    lengths, real, total = [], 0, 0
    for b in batches:
        if len(b) == 0:
            continue
        s = sizes[np.asarray(b, dtype=np.int64)]
        width = max(int(s.max()), int(pad_to_length or 0))
        lengths.append(width)
        real += int(s.sum())
        total += width * len(s)
    if not total:
        return 0.0, 0.0
    return float(np.mean(lengths)), 1.0 - real / total
