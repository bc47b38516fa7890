"""distill_glue: pairing, truncation, harder settings, supplementary ILD data."""

import numpy as np
import pytest

from fairseq_crild.data.binarize import prepare_task
from fairseq_crild.data.pair_dataset import longest_first
from fairseq_crild.tasks.distill_glue import (
    TRAIN_PROBE,
    DistillGlueConfig,
    DistillGlueTask,
    GlueDataError,
    apply_label_noise,
    apply_score_noise,
)


def test_longest_first_matches_one_token_at_a_time():
    for la in range(0, 12):
        for lb in range(0, 12):
            for budget in range(0, 14):
                a, b = la, lb
                while a + b > budget:  # BERT's reference loop
                    if a > b:
                        a -= 1
                    else:
                        b -= 1
                assert longest_first(la, lb, budget) == (a, b)


def _task(data, **kw):
    kw.setdefault("seed", 1)
    cfg = DistillGlueConfig(data=str(data), **kw)
    task = DistillGlueTask.setup_task(cfg)
    task.load_dataset("train")
    return task


def test_pairs_are_cls_a_sep_b_sep_with_types(tiny_env):
    task = _task(tiny_env["data"], max_positions=16)
    ds = task.dataset("train")
    d = task.dictionary
    item = ds[0]
    src, types = item["source"].tolist(), item["token_types"].tolist()
    assert len(src) <= 16 and src[0] == d.bos() and src[-1] == d.eos()
    first_sep = src.index(d.eos())
    assert types == [0] * (first_sep + 1) + [1] * (len(src) - first_sep - 1)
    batch = ds.collater([ds[i] for i in range(4)])
    assert batch["net_input"]["src_tokens"].shape == batch["net_input"]["token_type_ids"].shape
    assert batch["target"].dtype.is_floating_point is False


def test_subset_and_label_noise_are_seeded(tiny_env):
    base = _task(tiny_env["data"]).dataset("train")
    kw = dict(train_subset_size=20, label_noise=0.5, label_noise_draw="exact-count")
    a = _task(tiny_env["data"], data_seed=7, **kw)
    b = _task(tiny_env["data"], data_seed=7, **kw)
    da, db = a.dataset("train"), b.dataset("train")
    assert len(da) == 20 and np.array_equal(da.indices, db.indices)
    assert np.array_equal(da.labels, db.labels)
    changed = (da.labels[da.indices] != base.labels[da.indices]).sum()
    assert changed == 10  # exact-count: round(0.5 * 20), only inside the subset
    assert (da.labels != base.labels).sum() == 10
    with pytest.raises(GlueDataError, match="exceeds"):
        _task(tiny_env["data"], train_subset_size=10**6)


def _subset(data, **kw):
    cfg = DistillGlueConfig(data=str(data), train_subset_size=20, **kw)
    task = DistillGlueTask.setup_task(cfg)
    task.load_dataset("train")
    return task.dataset("train")


def test_subset_follows_seed_unless_data_seed_is_given(tiny_env):
    data = tiny_env["data"]
    by_seed = {s: _subset(data, seed=s).indices for s in (1, 2, 3)}
    assert not np.array_equal(by_seed[1], by_seed[2])
    assert not np.array_equal(by_seed[2], by_seed[3])
    # reference: the draw of the description, rng(seed).choice(n, k) sorted
    want = np.sort(np.random.RandomState(2).choice(48, size=20, replace=False))
    assert np.array_equal(by_seed[2], want)
    # an explicit --data-seed keeps one draw across training seeds (the earlier default, 1)
    fixed = [_subset(data, seed=s, data_seed=1).indices for s in (2, 3)]
    assert np.array_equal(fixed[0], fixed[1]) and np.array_equal(fixed[0], by_seed[1])


def test_independent_label_flips_rate_and_classes():
    n, p, classes = 20000, 0.3, 3
    original = np.random.RandomState(0).randint(0, classes, size=n)
    labels = original.copy()
    flipped = apply_label_noise(labels, p, classes, np.random.RandomState(5), np.arange(n))
    changed = np.flatnonzero(labels != original)
    assert np.array_equal(np.sort(flipped), changed)  # no flip lands on the original class
    sd = (n * p * (1 - p)) ** 0.5
    assert abs(len(changed) - n * p) < 4 * sd  # binomial(n, p), not exactly round(p n)
    # a flipped label goes to each of the other classes with probability 1/2
    up = ((labels[changed] - original[changed]) % classes == 1).mean()
    assert abs(up - 0.5) < 4 * (0.25 / len(changed)) ** 0.5
    # the count varies with the draw: two seeds, two counts (exact-count would give 6000 twice)
    counts = set()
    for seed in (1, 2, 3):
        fresh = original.copy()
        counts.add(len(apply_label_noise(fresh, p, classes, np.random.RandomState(seed),
                                         np.arange(n))))
    assert len(counts) > 1
    exact = original.copy()
    assert len(apply_label_noise(exact, p, classes, np.random.RandomState(1), np.arange(n),
                                 "exact-count")) == 6000


def test_label_noise_through_the_task_flips_to_another_class(tiny_env):
    base = _task(tiny_env["data"]).dataset("train")
    noisy = _task(tiny_env["data"], label_noise=0.3, seed=4).dataset("train")
    changed = noisy.labels != base.labels
    assert 0 < changed.sum() < len(base)
    assert set(np.unique(noisy.labels)) <= {0, 1}  # RTE: a flip is the other class
    other = _task(tiny_env["data"], label_noise=0.3, seed=5).dataset("train")
    assert not np.array_equal(other.labels, noisy.labels)  # drawn per seed


def test_missing_split_is_a_clear_error(tiny_env):
    task = _task(tiny_env["data"])
    with pytest.raises(GlueDataError, match="split 'valid_mm' is missing"):
        task.load_dataset("valid_mm")


def test_supplementary_ild_data(tiny_env, tmp_path):
    pairs = tmp_path / "pairs"
    pairs.mkdir()
    (pairs / "train.tsv").write_text("sentence1\tsentence2\nthe cat sat .\ta dog ran .\n"
                                     "no second sentence here\t\n")
    ild = tmp_path / "ild-bin"
    prepare_task(str(pairs), "pairs", str(tiny_env["ckpt"] / "dict.txt"), str(ild),
                 max_unk_rate=1.0)  # words outside the tiny RTE vocabulary, on purpose
    n_task = len(_task(tiny_env["data"]).dataset("train"))
    replace = _task(tiny_env["data"], ild_data=str(ild)).dataset("train")
    concat = _task(tiny_env["data"], ild_data=str(ild), ild_data_mode="concat").dataset("train")
    assert len(replace) == 2 and len(concat) == n_task + 2
    batch = concat.collater([concat[0], concat[len(concat) - 1]])
    assert "target" not in batch and batch["net_input"]["src_tokens"].shape[0] == 2


def test_score_noise_draws_from_the_training_scores():
    n, p = 20000, 0.3
    original = np.random.RandomState(0).uniform(0, 5, size=n).round(2)
    scores = original.copy()
    picked = apply_score_noise(scores, p, np.random.RandomState(3), np.arange(n))
    sd = (n * p * (1 - p)) ** 0.5
    assert abs(len(picked) - n * p) < 4 * sd  # each score picked with probability p
    untouched = np.setdiff1d(np.arange(n), picked)
    assert np.array_equal(scores[untouched], original[untouched])
    # every new score is some training example's original score, drawn uniformly: its
    # distribution is the training one (mean and quartiles within sampling error)
    assert set(scores[picked].tolist()) <= set(original.tolist())
    assert abs(scores[picked].mean() - original.mean()) < 4 * original.std() / len(picked) ** .5
    rest = np.setdiff1d(np.arange(n), picked)  # exact-count keeps its count
    assert len(apply_score_noise(original.copy(), p, np.random.RandomState(1), rest,
                                 "exact-count")) == round(p * len(rest))


def _stsb_folder(tmp_path, dict_txt, n=60):
    glue = tmp_path / "glue" / "STS-B"
    glue.mkdir(parents=True)
    head = ("index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2"
            "\tscore\n")
    words = ["the cat sat .", "a dog ran .", "the cat is on the mat ."]
    rows = [f"{i}\tg\tf\ty\to\ts\ts\t{words[i % 3]}\t{words[(i + 1) % 3]}\t{(i % 11) / 2:.2f}\n"
            for i in range(n)]
    (glue / "train.tsv").write_text(head + "".join(rows))
    (glue / "dev.tsv").write_text(head + "".join(rows[:6]))
    out = tmp_path / "stsb-bin"
    prepare_task(str(tmp_path / "glue"), "STS-B", dict_txt, str(out), max_unk_rate=1.0)
    return out


def test_label_noise_on_a_regression_task_replaces_scores(tiny_env, tmp_path):
    data = _stsb_folder(tmp_path, str(tiny_env["ckpt"] / "dict.txt"))
    clean = _task(data).dataset("train").labels
    noisy = _task(data, label_noise=0.3, seed=2).dataset("train").labels
    changed = np.flatnonzero(noisy != clean)
    assert 0 < len(changed) < len(clean)
    assert set(noisy[changed].tolist()) <= set(clean.tolist())
    again = _task(data, label_noise=0.3, seed=2).dataset("train").labels
    assert np.array_equal(again, noisy)  # drawn from the data seed


def _rows(ds):
    return [ds[i]["source"].tolist() for i in range(len(ds))]


def test_train_probe_is_a_fixed_sample_of_the_training_inputs(tiny_env, tmp_path):
    data = tiny_env["data"]
    task = _task(data, train_probe_size=10, train_subset_size=30, label_noise=0.3, seed=3)
    task.load_dataset(TRAIN_PROBE)
    train, probe = task.dataset("train"), task.dataset(TRAIN_PROBE)
    assert len(probe) == 10
    # its rows are rows the training split reads, with the training (noisy) labels; by
    # index, as the synthetic slice (no GLUE data) repeats its rows with different labels
    train_rows = {int(j) for j in train.indices}
    assert {tuple(probe[i]["source"].tolist()) for i in range(len(probe))} <= {
        tuple(train[i]["source"].tolist()) for i in range(len(train))}
    for j in probe.indices:
        assert int(j) in train_rows and int(probe.labels[j]) == int(train.labels[j])
    same = _task(data, train_probe_size=10, train_subset_size=30, label_noise=0.3, seed=3)
    same.load_dataset(TRAIN_PROBE)
    assert _rows(same.dataset(TRAIN_PROBE)) == _rows(probe)  # fixed by the data seed
    whole = _task(data, train_probe_size=10 ** 6)
    whole.load_dataset(TRAIN_PROBE)  # larger than the training set: all of it
    assert sorted(_rows(whole.dataset(TRAIN_PROBE))) == sorted(_rows(whole.dataset("train")))


def test_train_probe_samples_ild_data_when_stage1_reads_it(tiny_env, tmp_path):
    pairs = tmp_path / "pairs"
    pairs.mkdir()
    (pairs / "train.tsv").write_text("sentence1\tsentence2\n" + "".join(
        f"the cat sat {i} .\ta dog ran .\n" for i in range(12)))
    ild = tmp_path / "ild-bin"
    prepare_task(str(pairs), "pairs", str(tiny_env["ckpt"] / "dict.txt"), str(ild),
                 max_unk_rate=1.0)
    task = _task(tiny_env["data"], ild_data=str(ild), train_probe_size=5)
    task.load_dataset(TRAIN_PROBE)
    ild_rows = set(map(tuple, _rows(task.dataset("train"))))
    assert len(task.dataset(TRAIN_PROBE)) == 5
    assert set(map(tuple, _rows(task.dataset(TRAIN_PROBE)))) <= ild_rows
    concat = _task(tiny_env["data"], ild_data=str(ild), ild_data_mode="concat",
                   train_probe_size=40)
    concat.load_dataset(TRAIN_PROBE)
    probe = concat.dataset(TRAIN_PROBE)
    rows = set(map(tuple, _rows(probe)))
    assert len(probe) == 40 and rows <= set(map(tuple, _rows(concat.dataset("train"))))
    assert rows & ild_rows and rows - ild_rows  # drawn over both parts
