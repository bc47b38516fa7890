"""fairseq checkpoints load with torch's safe loading on; anything else is refused clearly."""

import argparse
import collections

import numpy as np
import pytest
import torch
from fairseq import checkpoint_utils

import fairseq_crild  # noqa: F401  (installs the allow-list)
from fairseq_crild.patches.checkpoint_safety import UnsafeCheckpointError


def _fairseq_like_state(**extra):
    state = {
        "args": argparse.Namespace(arch="bert_tiny", lr=[0.1], task="distill_glue"),
        "cfg": None,
        "model": collections.OrderedDict(w=torch.ones(2)),
        "optimizer_history": [{"criterion_name": "x", "optimizer_name": "y",
                               "lr_scheduler_state": {"best": np.float64(0.5)},
                               "num_updates": 3}],
        "extra_state": {"metrics": {}, "val_loss": np.float32(1.5), "train_iterator": {
            "epoch": 2, "iterations_in_epoch": 4, "shuffle": True}},
    }
    state.update(extra)
    return state


def _plain_load(path):
    return torch.load(path, map_location="cpu")  # torch's default: weights_only=True


def test_safe_loading_is_on_and_namespace_numpy_are_allowed(tmp_path):
    path = tmp_path / "ckpt.pt"
    torch.save(_fairseq_like_state(), path)
    state = _plain_load(path)  # would raise without the allow-list on torch >= 2.6
    assert state["args"].arch == "bert_tiny"
    assert float(state["extra_state"]["val_loss"]) == 1.5


def test_pickled_callable_is_refused_with_clear_error(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save(_fairseq_like_state(hook=print), path)
    with pytest.raises(UnsafeCheckpointError) as err:
        checkpoint_utils.load_checkpoint_to_cpu(str(path))
    msg = str(err.value)
    assert str(path) in msg and "print" in msg and "\n" not in msg


def test_truncated_checkpoint_is_refused(tmp_path):
    path = tmp_path / "cut.pt"
    torch.save(_fairseq_like_state(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(UnsafeCheckpointError, match="cut.pt"):
        checkpoint_utils.load_checkpoint_to_cpu(str(path))
