#!/usr/bin/env python
"""Write a GLUE test-server file (e.g. RTE.tsv: ``index<TAB>prediction``) from a checkpoint.

    python scripts/predict_glue.py CHECKPOINT --data data-bin/RTE [--split test] [--out-dir DIR]

MNLI's ``test`` / ``test_mm`` splits become MNLI-m.tsv / MNLI-mm.tsv; AX (a folder prepared
with --task AX) becomes AX.tsv, predicted with an MNLI model. Labels are written by name
(``entailment``), scores for STS-B.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from fairseq_crild.data.binarize import read_index  # noqa: E402
from fairseq_crild.models.loading import load_bert  # noqa: E402
from fairseq_crild.tasks.distill_glue import DistillGlueConfig, DistillGlueTask  # noqa: E402

SERVER_NAMES = {("MNLI", "test"): "MNLI-m", ("MNLI", "test_mm"): "MNLI-mm"}


@torch.inference_mode()
def predict(checkpoint: str, data: str, split: str, batch_size: int = 64):
    task = DistillGlueTask.setup_task(DistillGlueConfig(data=data, max_positions=512))
    model, _ = load_bert(checkpoint, task.dictionary)
    task.cfg.max_positions = min(512, model.max_positions())
    model.eval()
    task.load_dataset(split)
    ds = task.dataset(split)
    head = task.cfg.classification_head_name
    preds = [None] * len(ds)
    for start in range(0, len(ds), batch_size):
        batch = ds.collater([ds[i] for i in range(start, min(start + batch_size, len(ds)))])
        logits, _ = model(**batch["net_input"], classification_head_name=head)
        values = logits.view(-1).tolist() if task.regression else logits.argmax(-1).tolist()
        for i, v in zip(batch["id"].tolist(), values):
            preds[i] = f"{v:.3f}" if task.regression else task.label_names[v]
    return task, preds


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint")
    p.add_argument("--data", required=True, help="prepare_glue.py output folder")
    p.add_argument("--split", default="test")
    p.add_argument("--out-dir", default=".")
    args = p.parse_args(argv)
    try:
        task, preds = predict(args.checkpoint, args.data, args.split)
    except (ValueError, FileNotFoundError) as err:
        print(f"predict_glue: error: {err}", file=sys.stderr)
        return 2
    name = task.meta["task"]
    out = os.path.join(args.out_dir, SERVER_NAMES.get((name, args.split), name) + ".tsv")
    ids = read_index(args.data, args.split)
    os.makedirs(args.out_dir, exist_ok=True)
    tmp = out + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("index\tprediction\n")
        f.writelines(f"{i}\t{p}\n" for i, p in zip(ids, preds))
    os.replace(tmp, out)
    print(f"wrote {out} ({len(preds)} predictions)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
