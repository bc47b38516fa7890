"""The `paper` budget is the authors' protocol: the commands the pipeline
builds, the hydra configs generated from them, and what fairseq does with them."""

import math
import os

import pytest
from omegaconf import OmegaConf

from fairseq_crild.pipeline import hydra_configs as hc
from fairseq_crild.pipeline import recipe
from fairseq_crild.pipeline.runner import parse_log
from tests.conftest import ROOT, run_script

TASKS = sorted(hc.GLUE_TRAIN_SIZES)
# the authors' selection metric per task: accuracy for MRPC and QQP, (Pearson + Spearman) / 2
# for STS-B, MCC for CoLA, accuracy elsewhere
AUTHORS = {"MRPC": "accuracy", "QQP": "accuracy", "STS-B": "pearson_spearman", "CoLA": "mcc",
           "SST-2": "accuracy", "QNLI": "accuracy", "RTE": "accuracy", "WNLI": "accuracy",
           "MNLI": "accuracy"}
STAGE1_EPOCHS = {"RTE": 20, "MRPC": 20, "STS-B": 20, "CoLA": 20, "WNLI": 20, "SST-2": 10,
                 "QNLI": 10, "MNLI": 5, "QQP": 5}


def opt(args, name):
    """The value after the last occurrence of option ``name`` (None when absent)."""
    idx = [i for i, a in enumerate(args) if a == name]
    return args[idx[-1] + 1] if idx else None


def paper_commands(task, setting="full"):
    budget = recipe.budget_for("paper", task, setting)
    n = recipe.setting_train_size(hc.GLUE_TRAIN_SIZES[task], setting)
    metric = recipe.selection_metric(task, budget, hc.GLUE_METRICS[task])
    extra = recipe.setting_args(setting)
    return {
        "teacher": recipe.teacher_args("D", "S", "B", ["--arch", "bert_hf_base"], n, metric,
                                       budget, 42) + extra,
        "stage1": recipe.stage1_args("D", "S", "cr_ild", "T", "B", ["--arch", "bert_student"],
                                     n, budget, 42) + extra,
        "stage2": recipe.stage2_args("D", "S", "kd", "T", "I", "B", ["--arch", "bert_student"],
                                     n, metric, budget, 42) + extra,
    }


@pytest.mark.parametrize("task", TASKS)
def test_paper_commands_are_the_authors_protocol(task):
    cmds = paper_commands(task)
    n = hc.GLUE_TRAIN_SIZES[task]
    # lr, batch, epochs per stage, and the number of scheduled updates by hand: every stage,
    # the teacher included, drops its last incomplete batch (floor), as the authors' scripts do
    want = {"teacher": ("2e-05", 16, 4, n // 16),
            "stage1": ("3e-05", 32, STAGE1_EPOCHS[task], n // 32),
            "stage2": ("3e-05", 16, 4, n // 16)}
    for stage, args in cmds.items():
        lr, batch, epochs, per_epoch = want[stage]
        assert opt(args, "--optimizer") == "bert_adam", stage
        assert float(opt(args, "--clip-norm")) == 1.0, stage
        assert opt(args, "--lr") == lr and int(opt(args, "--batch-size")) == batch, stage
        assert int(opt(args, "--max-epoch")) == epochs, stage
        assert int(opt(args, "--total-num-update")) == per_epoch * epochs, stage
        assert int(opt(args, "--warmup-updates")) == int(0.1 * per_epoch * epochs), stage
        assert opt(args, "--lr-scheduler") == "polynomial_decay"
        assert opt(args, "--max-positions") == "128" and opt(args, "--max-update") is None
        assert float(opt(args, "--weight-decay")) == 0.01
        assert float(opt(args, "--adam-eps")) == 1e-6
        # the authors' head, teacher and students alike
        assert opt(args, "--classifier-activation") == "relu", stage
        assert float(opt(args, "--pooler-dropout")) == 0.0, stage
        assert "--drop-last-train-batch" in args, stage
    for stage, every in (("teacher", "100"), ("stage2", "50")):
        args = cmds[stage]
        assert opt(args, "--best-checkpoint-metric") == AUTHORS[task]
        assert "--maximize-best-checkpoint-metric" in args
        assert opt(args, "--validate-interval-updates") == every
        assert opt(args, "--save-interval-updates") == every
        # no epoch-end evaluation: fairseq evaluates at epoch e when e % interval == 0
        assert int(opt(args, "--validate-interval")) > int(opt(args, "--max-epoch"))
    assert "--disable-validation" in cmds["stage1"]


def test_other_budgets_keep_our_defaults():
    budget = recipe.budget_for("cpu", "MRPC")
    args = recipe.stage2_args("D", "S", "kd", "T", "I", "B", [], 3668,
                              recipe.selection_metric("MRPC", budget, "f1"), budget, 1)
    assert opt(args, "--optimizer") == "adam" and opt(args, "--clip-norm") is None
    assert opt(args, "--classifier-activation") is None  # standard head: dropout + Linear
    assert opt(args, "--best-checkpoint-metric") == "f1"
    assert opt(args, "--validate-interval") is None and "--drop-last-train-batch" not in args
    assert int(opt(args, "--total-num-update")) == math.ceil(3668 / 32) * 3
    assert recipe.selection_metric("STS-B", budget, "pearson") == "pearson"


def test_settings_as_the_authors_run_them():
    few = paper_commands("RTE", "few_sample")
    assert opt(few["teacher"], "--max-epoch") == "20"
    assert int(opt(few["teacher"], "--total-num-update")) == (1000 // 16) * 20
    assert int(opt(few["stage2"], "--total-num-update")) == (1000 // 16) * 4
    for args in few.values():
        assert opt(args, "--train-subset-size") == "1000"
        assert opt(args, "--data-seed") is None  # the task draws the subset from --seed
    noise = paper_commands("RTE", "label_noise")
    assert opt(noise["teacher"], "--max-epoch") == "4"
    for args in noise.values():
        assert float(opt(args, "--label-noise")) == 0.3
        assert opt(args, "--label-noise-draw") in (None, "independent")  # independent flips
    assert recipe.teacher_checkpoint("label_noise") == "checkpoint_last.pt"
    assert recipe.teacher_checkpoint("few_sample") == "checkpoint_best.pt"
    assert recipe.teacher_checkpoint("full") == "checkpoint_best.pt"
    with pytest.raises(ValueError, match="--setting"):
        recipe.budget_for("paper", "RTE", "few-shot")


def test_cpu_few_sample_budget_trains_longer_on_its_1000_examples():
    for name in ("table", "cpu"):
        full, few = recipe.budget_for(name, "STS-B"), recipe.budget_for(name, "STS-B",
                                                                         "few_sample")
        assert (few.teacher_epochs, few.stage1_epochs, few.stage2_epochs) == (10, 10, 10)
        assert few.teacher_lr == full.teacher_lr and few.student_lr == full.student_lr
        assert few.sentence_pooling == "mean" and few.stage2_batch == 16
        n_few = recipe.setting_train_size(5749, "few_sample")
        s1 = recipe.stage1_args("D", "S", "l_ild", "T", "B", [], n_few, few, 1)
        assert int(opt(s1, "--total-num-update")) == math.ceil(1000 / 32) * 10
        s2 = recipe.stage2_args("D", "S", "kd", "T", "I", "B", [], n_few, "pearson", few, 1)
        assert int(opt(s2, "--total-num-update")) == math.ceil(1000 / 16) * 10  # 630
        assert opt(s2, "--validate-interval-updates") == "60"
        teacher = recipe.teacher_args("D", "S", "B", [], n_few, "pearson", few, 1)
        assert opt(teacher, "--validate-interval-updates") == "30"
    assert recipe.budget_for("table", "STS-B", "label_noise") == recipe.budget_for(
        "table", "STS-B")  # label noise: the full budget (the teacher keeps its last)


def test_cr_ild_release_method():
    assert recipe.METHODS["cr_ild_release"] == ("cr_ild_release", "kd")
    assert recipe.METHODS["cr_ild"] == ("cr_ild", "kd")


# ----------------------------------------------------------------------- generated configs


def load(rel):
    path = os.path.join(ROOT, "configs", rel)
    with open(path, encoding="utf-8") as f:
        header = [line for line in f if line.startswith("#")]
    return OmegaConf.load(path), "".join(header)


@pytest.mark.parametrize("task", TASKS)
def test_generated_paper_configs(task):
    folders = ["", "few_sample/", "label_noise/"]  # STS-B: noise replaces scores
    for folder in folders:
        for stage in ("teacher", "stage1", "stage2"):
            cfg, header = load(f"paper/{task}/{folder}{stage}.yaml")
            where = f"paper/{task}/{folder}{stage}"
            assert cfg.optimizer._name == "bert_adam", where
            assert cfg.optimization.clip_norm == 1.0, where
            assert cfg.model.classifier_activation == "relu", where
            assert cfg.model.pooler_dropout == 0.0, where
            assert bool(cfg.task.get("drop_last_train_batch", False)), where
            if stage == "stage1":
                assert cfg.dataset.disable_validation is True
                continue
            every = 100 if stage == "teacher" else 50
            assert cfg.checkpoint.best_checkpoint_metric == AUTHORS[task], where
            assert cfg.dataset.validate_interval_updates == every, where
            assert cfg.dataset.validate_interval > cfg.optimization.max_epoch, where
            if folder == "few_sample/":
                assert cfg.task.train_subset_size == 1000
                assert cfg.optimization.max_epoch == (20 if stage == "teacher" else 4)
            if folder == "label_noise/":
                assert cfg.task.label_noise == 0.3
                want = "checkpoint_last.pt"
            else:
                want = "checkpoint_best.pt"
            if stage == "teacher":
                assert f"distil from this run's {want}" in header, where
            else:
                assert f"task.teacher_path=TEACHER/{want}" in header, where
    release, _ = load(f"paper/{task}/stage1_cr_ild_release.yaml")
    assert release.criterion.ild_preset == "cr_ild_release"
    assert release.optimizer._name == "bert_adam" and release.task.drop_last_train_batch


def test_cpu_configs_keep_the_standard_head():
    cfg, header = load("cpu/MRPC/stage2.yaml")
    assert cfg.optimizer._name == "adam" and cfg.model.classifier_activation == "none"
    assert cfg.model.pooler_dropout == 0.1 and cfg.checkpoint.best_checkpoint_metric == "f1"
    assert "task.teacher_path=TEACHER/checkpoint_best.pt" in header


def test_write_hydra_configs_check_passes():
    # the two tasks whose selection metric differs from their first GLUE metric; the whole
    # tree (about a minute) is checked the same way by `write_hydra_configs.py --check`
    proc = run_script("scripts/write_hydra_configs.py", "--check", "--only", "paper/STS-B",
                      "paper/MRPC", check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]


def test_every_committed_config_is_generated():
    """No stale file survives a recipe change (e.g. STS-B's label-noise folder)."""
    generated = set()
    for task in TASKS:
        for budget_name in hc.ARCHS:
            generated |= {c.path for c in hc.stage_configs(budget_name, task)}
        generated |= {c.path for c in hc.paper_setting_configs(task)}
    committed = {os.path.relpath(os.path.join(d, f), os.path.join(ROOT, "configs"))
                 for d, _, files in os.walk(os.path.join(ROOT, "configs"))
                 for f in files if f.endswith(".yaml")}
    assert committed == generated, (committed - generated, generated - committed)


# ----------------------------------------------------------------------- fairseq's behaviour


def test_fairseq_runs_the_paper_protocol(tiny_env, tmp_path):
    """A paper-shaped teacher run (bert_adam + clip, relu head without dropout, no epoch-end
    evaluation) on 48 examples: 3 updates per epoch, 2 epochs, evaluation every 2 updates.
    fairseq then evaluates at updates 2, 4 and 6 only (not at the epoch end, update 3).
    Then stage 1 with the authors' released preset from that teacher: batch 32 with the last
    incomplete batch dropped is 48 // 32 = 1 update per epoch, as its schedule counts."""
    budget = recipe.Budget(2, 2, 1, eval_every=2, teacher_eval_every=2, optimizer="bert_adam",
                           clip_norm=1.0, head="authors", selection="authors",
                           epoch_end_eval=False, drop_last=True)
    arch = ["--arch", "bert", "--encoder-layers", "4", "--encoder-embed-dim", "32",
            "--encoder-attention-heads", "4", "--encoder-ffn-embed-dim", "64",
            "--max-position-embeddings", "128"]
    save = tmp_path / "teacher"
    args = recipe.teacher_args(str(tiny_env["data"]), str(save),
                               str(tiny_env["ckpt"] / "model.pt"), arch, 48, "accuracy",
                               budget, 3)
    proc = run_script("-m", "fairseq_cli.train", *args,
                      env={**os.environ, "OMP_NUM_THREADS": "1"})
    log = tmp_path / "train.log"
    log.write_text(proc.stdout + proc.stderr)
    evals = [int(r["valid_num_updates"]) for r in parse_log(str(log))]
    assert evals == [2, 4, 6], evals
    epoch_ends = [int(r["train_num_updates"]) for r in parse_log(str(log), "train")]
    assert epoch_ends == [3, 6]  # fairseq's default --validate-interval 1 evaluates at 3
    import torch

    state = torch.load(save / "checkpoint_last.pt", map_location="cpu", weights_only=False)
    model_cfg = state["cfg"]["model"]
    assert model_cfg["classifier_activation"] == "relu" and model_cfg["pooler_dropout"] == 0.0
    assert state["cfg"]["optimizer"]["_name"] == "bert_adam"
    assert state["cfg"]["optimization"]["clip_norm"] == 1.0
    assert (save / "checkpoint_best.pt").is_file()

    s1 = tmp_path / "stage1"
    args = recipe.stage1_args(str(tiny_env["data"]), str(s1), "cr_ild_release",
                              str(save / "checkpoint_last.pt"),
                              str(tiny_env["ckpt"] / "model.pt"),
                              arch[:2] + ["--encoder-layers", "2"] + arch[4:], 48, budget, 3)
    assert opt(args, "--total-num-update") == "2"
    proc = run_script("-m", "fairseq_cli.train", *args,
                      env={**os.environ, "OMP_NUM_THREADS": "1"})
    log.write_text(proc.stdout + proc.stderr)
    assert [int(r["train_num_updates"]) for r in parse_log(str(log), "train")] == [1, 2]
    assert "skipped 16 of 48 training" in log.read_text()
    assert not parse_log(str(log))  # stage 1 never evaluates
