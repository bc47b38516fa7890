"""Teacher-logit cache (stage-2 KD): same loss as the live teacher, keyed, never half-written."""

import os
import shutil

import numpy as np
import pytest
import torch

from fairseq_crild.criterions.kd import KdCriterion
from fairseq_crild.data import logit_cache
from fairseq_crild.data.logit_cache import TeacherLogitCache, data_fingerprint
from fairseq_crild.distill.teacher import FrozenTeacher
from fairseq_crild.models import BertConfig, BertModel
from fairseq_crild.tasks.distill_glue import DistillGlueConfig, DistillGlueTask


def _write_teacher(tiny_env, path, seed):
    """The tiny converted BERT with a seeded random 2-class head, as a fairseq checkpoint."""
    state = torch.load(str(tiny_env["ckpt"] / "model.pt"), map_location="cpu")
    gen = torch.Generator().manual_seed(seed)
    dim = state["model"]["pooler.weight"].shape[0]
    # a random init (std 0.02) gives nearly the same logits for every input: widen the pooler
    # and head so that a lookup by the wrong id changes the loss
    state["model"]["pooler.weight"] = torch.randn(dim, dim, generator=gen) * 4 / dim ** 0.5
    state["model"]["classification_heads.glue.out_proj.weight"] = torch.randn(2, dim,
                                                                              generator=gen) * 2
    state["model"]["classification_heads.glue.out_proj.bias"] = torch.randn(2, generator=gen)
    torch.save(state, path)
    return str(path)


@pytest.fixture(scope="module")
def teachers(tiny_env, tmp_path_factory):
    folder = tmp_path_factory.mktemp("teachers")
    return [_write_teacher(tiny_env, folder / f"t{i}.pt", seed=i) for i in range(2)]


def _task(data, teacher, **kw):
    task = DistillGlueTask.setup_task(DistillGlueConfig(data=str(data), seed=1,
                                                        teacher_path=teacher, **kw))
    task.load_dataset("train")
    return task


def _student(task):
    torch.manual_seed(0)
    cfg = BertConfig(encoder_layers=1, encoder_embed_dim=16, encoder_attention_heads=2,
                     encoder_ffn_embed_dim=32, max_position_embeddings=128, dropout=0.0,
                     attention_dropout=0.0, pooler_dropout=0.0)
    model = BertModel(cfg, len(task.dictionary), task.dictionary.pad())
    model.register_classification_head("glue", num_classes=task.num_classes)
    return model.train()


def _batches(task, size=8):
    ds = task.dataset("train")
    order = ds.ordered_indices()
    return [ds.collater([ds[int(i)] for i in order[s:s + size]])
            for s in range(0, len(order), size)]


def _kd(task, cache_dir=None):
    return KdCriterion(task, temperature=2.0, alpha=0.0, teacher_logit_cache=cache_dir is not None,
                       teacher_logit_cache_dir=str(cache_dir or ""))


def _forbid_teacher(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the teacher ran although its logits are cached")
    monkeypatch.setattr(FrozenTeacher, "__call__", refuse)


def test_cached_kd_loss_equals_the_live_teacher_loss(tiny_env, teachers, tmp_path, monkeypatch):
    # a seeded subset with label noise: ids must still point at the right cached rows
    task = _task(tiny_env["data"], teachers[0], train_subset_size=20, label_noise=0.3,
                 data_seed=3)
    student = _student(task)
    live, cached = _kd(task), _kd(task, tmp_path / "cache")
    batches = _batches(task)
    ids = np.sort(np.concatenate([b["id"].numpy() for b in batches]))
    assert np.array_equal(ids, task.dataset("train").indices) and ids[-1] >= 20  # rows of 48
    want = [live(student, b)[0].detach() for b in batches]
    want_logits = [live.teacher_logits(b, torch.empty(0)) for b in batches]
    cached(student, batches[0])  # builds the cache over all 48 rows of the split
    files = sorted(os.listdir(tmp_path / "cache"))
    assert len(files) == 2 and files[0].endswith(".json") and files[1].endswith(".npy")
    _forbid_teacher(monkeypatch)
    got = [cached(student, b)[0].detach() for b in batches]
    for a, b in zip(got, want):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6), (a, b)
    # the targets themselves, row by row (the loss alone is a weak check of the id lookup)
    for batch, logits in zip(batches, want_logits):
        assert torch.allclose(cached._logit_cache.lookup(batch["id"]), logits, atol=1e-5)
    # validation batches are not training-split rows: the live teacher is used there
    with pytest.raises(AssertionError, match="teacher ran"):
        cached(student.eval(), batches[0])


def test_cache_is_reused_and_invalidated_when_the_teacher_changes(tiny_env, teachers, tmp_path,
                                                                  monkeypatch):
    def build(teacher, **kw):
        task = _task(tiny_env["data"], teacher, **kw)
        crit = _kd(task, tmp_path)
        crit(_student(task), _batches(task)[0])
        return crit._logit_cache

    first = build(teachers[0])
    other = build(teachers[1])
    assert other.path != first.path and os.path.isfile(first.path)
    assert not np.allclose(np.asarray(other.logits), np.asarray(first.logits))
    shorter = build(teachers[0], max_positions=16)  # truncation changes the logits too
    assert shorter.path not in (first.path, other.path)
    with monkeypatch.context() as m:
        _forbid_teacher(m)
        again = build(teachers[0])
    assert again.path == first.path
    assert np.array_equal(np.asarray(again.logits), np.asarray(first.logits))


def test_data_fingerprint_follows_the_token_files(tiny_env, tmp_path):
    copy = tmp_path / "data"
    shutil.copytree(tiny_env["data"], copy)
    assert data_fingerprint(str(copy), "train") == data_fingerprint(str(tiny_env["data"]), "train")
    path = copy / "input1" / "train.bin"
    raw = bytearray(path.read_bytes())
    raw[0], raw[2] = raw[2], raw[0]  # swap two token ids (2-byte tokens in a tiny vocabulary)
    path.write_bytes(bytes(raw))
    assert data_fingerprint(str(copy), "train") != data_fingerprint(str(tiny_env["data"]),
                                                                    "train")


def test_cache_is_never_half_written(tiny_env, teachers, tmp_path, monkeypatch):
    task = _task(tiny_env["data"], teachers[0])
    teacher = task.teacher

    def logits_fn(net_input):
        return teacher(net_input, "glue")[0]

    def build():
        return TeacherLogitCache.load_or_build(task, logits_fn, [teacher.model], str(tmp_path))

    real_save = np.save

    def dies_halfway(f, arr):
        real_save(f, arr[: len(arr) // 2])  # some bytes reach the disk, then the disk fills
        raise OSError("No space left on device")

    monkeypatch.setattr(logit_cache.np, "save", dies_halfway)
    with pytest.raises(OSError, match="No space"):
        build()
    assert os.listdir(tmp_path) == []
    monkeypatch.setattr(logit_cache.np, "save", real_save)

    calls = {"n": 0}

    def crashes_on_second_batch(net_input):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return logits_fn(net_input)

    with pytest.raises(KeyboardInterrupt):
        TeacherLogitCache.load_or_build(task, crashes_on_second_batch, [teacher.model],
                                        str(tmp_path), batch_size=8)
    assert os.listdir(tmp_path) == []

    cache = build()
    assert os.path.isfile(cache.path) and len(cache) == 48
    # a damaged file (say truncated by a full disk outside our control) is recomputed
    with open(cache.path, "r+b") as f:
        f.truncate(100)
    again = build()
    assert again.path == cache.path and again.logits.shape == (48, 2)
    assert not any(".tmp-" in name for name in os.listdir(tmp_path))
