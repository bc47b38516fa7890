#!/usr/bin/env python
"""Write a GLUE test-server file (e.g. RTE.tsv: ``index<TAB>prediction``) from a checkpoint.

    python scripts/predict_glue.py CHECKPOINT --data data-bin/RTE [--split test] [--out-dir DIR]

MNLI's ``test`` / ``test_mm`` splits become MNLI-m.tsv / MNLI-mm.tsv; AX (a folder prepared
with --task AX) becomes AX.tsv, predicted with an MNLI model. Labels are written by name
(``entailment``), scores for STS-B. Inputs are truncated at the checkpoint's training
``--max-positions`` (its dev evaluation's length) unless ``--max-positions`` is given.
"""

import argparse
import os
import sys
from typing import Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from fairseq_crild.data.binarize import read_index  # noqa: E402
from fairseq_crild.errors import CrildError  # noqa: E402
from fairseq_crild.hub import load_checked  # noqa: E402
from fairseq_crild.inference_length import inference_max_positions  # noqa: E402
from fairseq_crild.models.loading import read_checkpoint  # noqa: E402
from fairseq_crild.tasks.distill_glue import DistillGlueConfig, DistillGlueTask  # noqa: E402

SERVER_NAMES = {("MNLI", "test"): "MNLI-m", ("MNLI", "test_mm"): "MNLI-mm"}


@torch.inference_mode()
def predict(checkpoint: str, data: str, split: str, batch_size: int = 64,
            allow_any_role: bool = False, allow_other_task: bool = False,
            max_positions: Optional[int] = None):
    """(task, predictions in example order); the checkpoint checked against ``data`` as the
    hub does (role, GLUE task, vocabulary, head, labels). ``max_positions``: truncation
    length (None: the checkpoint's training ``--max-positions``)."""
    if batch_size < 1:
        raise ValueError(f"--batch-size {batch_size}: give a positive number (e.g. 64)")
    if os.path.isdir(checkpoint):
        checkpoint = os.path.join(checkpoint, "checkpoint_best.pt")
    state = read_checkpoint(checkpoint)
    task = DistillGlueTask.setup_task(DistillGlueConfig(data=data))
    model = load_checked(checkpoint, task, allow_any_role, allow_other_task, state)
    task.cfg.max_positions = inference_max_positions(state, model.max_positions(),
                                                     max_positions, checkpoint)
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
    from fairseq_crild.hub import add_loading_options

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint")
    p.add_argument("--data", required=True, help="prepare_glue.py output folder")
    p.add_argument("--split", default="test")
    p.add_argument("--out-dir", default=".")
    p.add_argument("--batch-size", type=int, default=64, help="examples per forward pass (>= 1)")
    add_loading_options(p, "predict")
    args = p.parse_args(argv)
    try:
        task, preds = predict(args.checkpoint, args.data, args.split, args.batch_size,
                              args.allow_any_role, args.allow_other_task, args.max_positions)
        name = task.meta["task"]
        out = os.path.join(args.out_dir, SERVER_NAMES.get((name, args.split), name) + ".tsv")
        ids = read_index(args.data, args.split)
        if len(ids) != len(preds):
            raise ValueError(f"{args.data}: {len(ids)} ids for {len(preds)} examples of "
                             f"{args.split}; prepare the folder again")
        os.makedirs(args.out_dir, exist_ok=True)
        tmp = out + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write("index\tprediction\n")
            f.writelines(f"{i}\t{p}\n" for i, p in zip(ids, preds))
        os.replace(tmp, out)
    except (CrildError, ValueError) as err:  # UnsafeCheckpointError, mismatches, ...
        print(f"predict_glue: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # missing or unreadable files, an --out-dir that is a file
        msg = f"{err.filename}: {err.strerror}" if err.filename and err.strerror else err
        print(f"predict_glue: error: {msg}", file=sys.stderr)
        return 2
    print(f"wrote {out} ({len(preds)} predictions)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
