"""configs/ is generated from the pipeline's recipe and runs under fairseq-hydra-train."""

import os
import shutil
import subprocess
import sys

from tests.conftest import ROOT, run_script

HYDRA_TRAIN = [sys.executable, "-c", "from fairseq_cli.hydra_train import cli_main; cli_main()"]


def test_committed_configs_match_the_recipe():
    # a subset keeps this fast; the whole tree is checked the same way by
    # `python scripts/write_hydra_configs.py --check`
    proc = run_script("scripts/write_hydra_configs.py", "--check", "--only", "cpu/RTE",
                      "paper/STS-B/few_sample", "paper/CoLA/supplementary_ild", check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_check_reports_a_stale_config(tmp_path):
    out = tmp_path / "configs"
    shutil.copytree(os.path.join(ROOT, "configs", "cpu", "RTE"), out / "cpu" / "RTE")
    path = out / "cpu" / "RTE" / "stage2.yaml"
    text = path.read_text()
    assert "max_epoch: 3" in text
    path.write_text(text.replace("max_epoch: 3", "max_epoch: 7"))
    proc = run_script("scripts/write_hydra_configs.py", "--check", "--only", "cpu/RTE",
                      "--out", str(out), check=False)
    assert proc.returncode == 1 and "cpu/RTE/stage2.yaml" in proc.stdout


def _hydra_train(config: str, *overrides: str) -> subprocess.CompletedProcess:
    folder, name = os.path.split(config)
    return subprocess.run([*HYDRA_TRAIN, "--config-dir", os.path.join("configs", folder),
                           "--config-name", name, *overrides], cwd=ROOT, capture_output=True,
                          text=True)


def test_teacher_config_trains_with_fairseq_hydra_train(tiny_env, tmp_path):
    save = tmp_path / "teacher"
    proc = _hydra_train("cpu/RTE/teacher", f"task.data={tiny_env['data']}",
                        f"checkpoint.save_dir={save}",
                        f"checkpoint.finetune_from_model={tiny_env['ckpt'] / 'model.pt'}",
                        "model._name=bert", "model.encoder_layers=4",
                        "model.encoder_embed_dim=32", "model.encoder_attention_heads=4",
                        "model.encoder_ffn_embed_dim=64", "model.max_position_embeddings=128",
                        "optimization.max_update=3", "common.log_format=simple")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (save / "checkpoint_last.pt").is_file()
    log = proc.stdout + proc.stderr
    assert "num_updates 3" in log or "num_updates=3" in log


def test_two_processes_through_the_hydra_entry_point(tiny_env, tmp_path):
    """scripts/hydra_train.py (fairseq-hydra-train with the plugin imported first) runs the
    config on 2 CPU processes through fairseq's own --distributed-world-size spawn."""
    save = tmp_path / "teacher2"
    proc = subprocess.run(
        [sys.executable, "scripts/hydra_train.py", "--config-dir", "configs/cpu/RTE",
         "--config-name", "teacher", f"task.data={tiny_env['data']}",
         f"checkpoint.save_dir={save}",
         f"checkpoint.finetune_from_model={tiny_env['ckpt'] / 'model.pt'}",
         "model._name=bert", "model.encoder_layers=4", "model.encoder_embed_dim=32",
         "model.encoder_attention_heads=4", "model.encoder_ffn_embed_dim=64",
         "model.max_position_embeddings=128", "optimization.max_update=2",
         "dataset.batch_size=4", "distributed_training.distributed_world_size=2",
         "common.log_format=simple"],
        cwd=ROOT, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert "distributed init (rank 1)" in log and "num_updates 2" in log
    assert (save / "checkpoint_last.pt").is_file()


def test_missing_data_path_is_named(tmp_path):
    proc = _hydra_train("cpu/RTE/stage1", f"checkpoint.save_dir={tmp_path / 's1'}")
    assert proc.returncode != 0
    assert "task.data" in proc.stderr
    assert not list(tmp_path.glob("s1/*.pt"))  # fairseq makes the folder first; nothing in it


def test_paper_teacher_config_trains(tiny_env, tmp_path):
    """The paper budget's config (bert_adam, --clip-norm 1.0, relu head without dropout,
    update-interval evaluation only) runs as written under fairseq-hydra-train."""
    save = tmp_path / "paper_teacher"
    proc = _hydra_train("paper/RTE/teacher", f"task.data={tiny_env['data']}",
                        f"checkpoint.save_dir={save}",
                        f"checkpoint.finetune_from_model={tiny_env['ckpt'] / 'model.pt'}",
                        "model._name=bert", "model.encoder_layers=4",
                        "model.encoder_embed_dim=32", "model.encoder_attention_heads=4",
                        "model.encoder_ffn_embed_dim=64", "model.max_position_embeddings=128",
                        "optimization.max_update=2", "common.cpu=true",
                        "common.log_format=simple")
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = proc.stdout + proc.stderr
    assert "num_updates 2" in log and "'_name': 'bert_adam'" in log
    assert (save / "checkpoint_last.pt").is_file()
