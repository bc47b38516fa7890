"""distill_glue: pairing, truncation, harder settings, supplementary ILD data."""

import numpy as np
import pytest

from fairseq_crild.data.binarize import prepare_task
from fairseq_crild.data.pair_dataset import longest_first
from fairseq_crild.tasks.distill_glue import DistillGlueConfig, DistillGlueTask, GlueDataError


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
    cfg = DistillGlueConfig(data=str(data), seed=1, **kw)
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
    a = _task(tiny_env["data"], train_subset_size=20, label_noise=0.5, data_seed=7)
    b = _task(tiny_env["data"], train_subset_size=20, label_noise=0.5, data_seed=7)
    da, db = a.dataset("train"), b.dataset("train")
    assert len(da) == 20 and np.array_equal(da.indices, db.indices)
    assert np.array_equal(da.labels, db.labels)
    changed = (da.labels[da.indices] != base.labels[da.indices]).sum()
    assert changed == 10  # round(0.5 * 20), only inside the subset
    assert (da.labels != base.labels).sum() == 10
    with pytest.raises(GlueDataError, match="exceeds"):
        _task(tiny_env["data"], train_subset_size=10**6)


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
    prepare_task(str(pairs), "pairs", str(tiny_env["ckpt"] / "dict.txt"), str(ild))
    n_task = len(_task(tiny_env["data"]).dataset("train"))
    replace = _task(tiny_env["data"], ild_data=str(ild)).dataset("train")
    concat = _task(tiny_env["data"], ild_data=str(ild), ild_data_mode="concat").dataset("train")
    assert len(replace) == 2 and len(concat) == n_task + 2
    batch = concat.collater([concat[0], concat[len(concat) - 1]])
    assert "target" not in batch and batch["net_input"]["src_tokens"].shape[0] == 2
