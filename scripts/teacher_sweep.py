#!/usr/bin/env python
"""A small dev sweep of the teacher's fine-tuning recipe for one GLUE task.

    python scripts/teacher_sweep.py --task RTE --out runs/sweep --lrs 2e-5,5e-5,1e-4 \\
        --epochs 5,10 --optimizers adam [--glue-dir GLUE] [--seed 1] [--eval-every 50]

Each (optimizer, lr, epochs) fine-tunes the pretrained base (all-MiniLM-L6-v2 by default)
with the recipe's teacher command (pipeline/recipe.py: batch 16, 10% warm-up then linear
decay, dev evaluated every --eval-every updates, every dev example counted; --device auto
trains on CUDA when present) and records its
best and last dev evaluation. The table is written to --summary (JSON, one row per run) after
every run, so a cut-off sweep keeps what finished. Finished runs are reused on rerun. Only
checkpoint_best.pt of each run is kept (the others are deleted when the run ends).
"""

import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fairseq_crild.pipeline import recipe  # noqa: E402
from fairseq_crild.pipeline.runner import ROOT, parse_log, run_stage  # noqa: E402


def _prepare(base: str, glue_dir: str, task: str, out: str) -> tuple:
    base_dir = os.path.join(out, "base")
    if not os.path.isfile(os.path.join(base_dir, "model.pt")):
        subprocess.run([sys.executable, "scripts/convert_hf_bert.py", base, base_dir,
                        "--overwrite"], cwd=ROOT, check=True)
    data = os.path.join(out, "data", task)
    if not os.path.isfile(os.path.join(data, "meta.json")):
        subprocess.run([sys.executable, "scripts/prepare_glue.py", "--glue-dir", glue_dir,
                        "--task", task, "--dict", os.path.join(base_dir, "dict.txt"), "--out",
                        data, "--overwrite"], cwd=ROOT, check=True)
    return os.path.join(base_dir, "model.pt"), data


def _optimizer_args(name: str) -> list:
    if name == "adam":
        return []  # the recipe's default: AdamW, betas (0.9, 0.999), eps 1e-6, wd 0.01
    if name == "bert_adam":  # the authors' optimizer, after a global clip to 1.0
        return ["--optimizer", "bert_adam", "--clip-norm", "1.0"]
    raise ValueError(f"--optimizers: unknown {name!r} (adam, bert_adam)")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--glue-dir", default=os.environ.get("GLUE_DIR", "../shared/data/glue"))
    p.add_argument("--base", default="minilm")
    p.add_argument("--lrs", default="2e-5,5e-5,1e-4")
    p.add_argument("--epochs", default="5,10")
    p.add_argument("--optimizers", default="adam")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--eval-every", type=int, default=50)
    p.add_argument("--summary", default="", help="JSON table (default OUT/TASK-sweep.json)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present) | cpu | cuda")
    p.add_argument("--sentence-pooling", default="cls", choices=("cls", "mean"),
                   help="what the head reads (the model's --sentence-pooling)")
    args = p.parse_args(argv)
    from fairseq_crild.data.glue_tasks import get_task

    task = get_task(args.task).name
    out = os.path.abspath(args.out)
    base_ckpt, data = _prepare(args.base, args.glue_dir, task, out)
    from fairseq_crild.tasks.distill_glue import read_meta

    meta = read_meta(data)
    metric, n_train = recipe.metric_for(meta), meta.splits["train"]
    from fairseq_crild.models.loading import saved_model_config

    cfg = saved_model_config(base_ckpt)
    arch = ["--arch", "bert", "--encoder-layers", str(cfg["encoder_layers"]),
            "--encoder-embed-dim", str(cfg["encoder_embed_dim"]),
            "--encoder-attention-heads", str(cfg["encoder_attention_heads"]),
            "--encoder-ffn-embed-dim", str(cfg["encoder_ffn_embed_dim"]),
            "--max-position-embeddings", str(cfg["max_position_embeddings"]),
            "--sentence-pooling", args.sentence_pooling]
    pooling_tag = "" if args.sentence_pooling == "cls" else f"-{args.sentence_pooling}"
    device = recipe.resolve_device(args.device)
    summary = args.summary or os.path.join(out, f"{task}-sweep.json")
    rows = []
    for opt in args.optimizers.split(","):
        for epochs in (int(e) for e in args.epochs.split(",")):
            for lr in (float(x) for x in args.lrs.split(",")):
                name = f"{opt}-lr{lr:g}-ep{epochs}{pooling_tag}"
                save = os.path.join(out, "teachers", task, name)
                budget = recipe.Budget(epochs, 1, 1, eval_every=args.eval_every, teacher_lr=lr)
                cmd = (recipe.teacher_args(data, save, base_ckpt, arch, n_train, metric, budget,
                                           args.seed)
                       + recipe.device_args(device) + _optimizer_args(opt))
                rec = run_stage(name, save, cmd, quiet=True)
                for leftover in os.listdir(save):
                    if leftover.endswith(".pt") and leftover != "checkpoint_best.pt":
                        os.remove(os.path.join(save, leftover))
                evals = parse_log(os.path.join(save, "train.log"))
                key = f"valid_{metric}"
                scored = [r for r in evals if isinstance(r.get(key), float)]
                best = max(scored, key=lambda r: r[key])
                rows.append({
                    "task": task, "optimizer": opt, "lr": lr, "epochs": epochs,
                    "sentence_pooling": args.sentence_pooling,
                    "seed": args.seed, "metric": metric, "best": best[key],
                    "best_update": best.get("valid_num_updates"), "last": scored[-1][key],
                    "best_dev_loss": best.get("valid_loss"), "n_evals": len(scored),
                    "wall_s": rec["wall_s"], "checkpoint": os.path.join(save,
                                                                        "checkpoint_best.pt"),
                })
                print(json.dumps(rows[-1]), flush=True)
                os.makedirs(os.path.dirname(os.path.abspath(summary)), exist_ok=True)
                with open(summary, "w", encoding="utf-8") as f:
                    json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
