"""The plugin patches fairseq through one helper (``patching.patch_once``): once per process,
each patch recorded with the fairseq releases it was written against."""

import logging
import types

import pytest

import fairseq_crild  # noqa: F401  (installs the patches)
from fairseq_crild.optim import param_groups
from fairseq_crild.patches import atomic_checkpoints, checkpoint_safety, distributed
from fairseq_crild.patches.patching import (
    FAIRSEQ_VERSIONS,
    PATCHES,
    installed_fairseq_version,
    patch_once,
)

TARGETS = {
    "fairseq.checkpoint_utils.load_checkpoint_to_cpu",
    "fairseq.checkpoint_utils.load_checkpoint",
    "fairseq.file_io.PathManager.copy",
    "fairseq.distributed.utils.call_main",
    "fairseq.distributed.utils.all_gather_list",
    "fairseq.distributed.utils._broadcast_object_slow",
    "fairseq.models.DistributedFairseqModel",
    "fairseq.optim._build_optimizer",
    "fairseq.trainer.Trainer._build_optimizer",
    "fairseq.optim.fp16_optimizer._FP16OptimizerMixin.build_fp32_params",
}


def _resolve(target):
    import importlib

    parts = target.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:-1]:
            obj = getattr(obj, name)
        raw = obj.__dict__[parts[-1]] if isinstance(obj, type) else getattr(obj, parts[-1])
        return getattr(raw, "__func__", raw)
    raise AssertionError(target)


def test_every_patch_is_recorded_with_its_fairseq_versions_and_applied_once():
    for install in (checkpoint_safety.install, atomic_checkpoints.install, distributed.install,
                    param_groups.install):
        install()  # a second install changes nothing
    assert set(PATCHES) == TARGETS
    for target, patch in PATCHES.items():
        fn = _resolve(target)
        assert fn._crild_patched and fn._crild_fairseq == patch.fairseq == FAIRSEQ_VERSIONS
        assert not getattr(fn.__wrapped__, "_crild_patched", False), target  # not wrapped twice
        assert patch.why
    # the installed fairseq is one the patches were written for
    assert installed_fairseq_version() in FAIRSEQ_VERSIONS


def test_patch_once_is_idempotent_and_warns_on_another_fairseq(caplog):
    owner = types.ModuleType("fake_fairseq_module")
    owner.f = lambda x: x + 1
    calls = []

    def wrap(original):
        calls.append(original)
        return lambda x: original(x) * 10

    with caplog.at_level(logging.WARNING, logger="fairseq_crild.patches.patching"):
        assert patch_once(owner, "f", wrap, "test", fairseq=("0.0.1",))
        assert not patch_once(owner, "f", wrap, "test", fairseq=("0.0.1",))
    assert owner.f(1) == 20 and len(calls) == 1
    assert "for fairseq 0.0.1; this is fairseq" in caplog.text
    PATCHES.pop("fake_fairseq_module.f")
    with pytest.raises(ValueError, match="kind must be one of"):
        patch_once(owner, "f", wrap, "test", kind="property")
