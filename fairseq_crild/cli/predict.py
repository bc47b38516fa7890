"""Write a GLUE test-server file (e.g. RTE.tsv: ``index<TAB>prediction``) from a checkpoint.

``crild-predict`` is the installed command; ``python scripts/predict_glue.py`` runs the same
``main`` from a source checkout.

    crild-predict CHECKPOINT --data data-bin/RTE [--split test] [--out-dir DIR]

MNLI's ``test`` / ``test_mm`` splits become MNLI-m.tsv / MNLI-mm.tsv; AX (a folder prepared
with --task AX) becomes AX.tsv, predicted with an MNLI model. Labels are written by name
(``entailment``), scores for STS-B. Inputs are truncated at the checkpoint's training
``--max-positions`` (its dev evaluation's length) unless ``--max-positions`` is given.
"""

import argparse
import os
import sys
from typing import Optional, Sequence

from fairseq_crild.data.binarize import read_index
from fairseq_crild.errors import CrildError
from fairseq_crild.export.hub import add_loading_options, predict_split

SERVER_NAMES = {("MNLI", "test"): "MNLI-m", ("MNLI", "test_mm"): "MNLI-mm"}


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint")
    p.add_argument("--data", required=True, help="prepare_glue.py output folder")
    p.add_argument("--split", default="test")
    p.add_argument("--out-dir", default=".")
    p.add_argument("--batch-size", type=int, default=64, help="examples per forward pass (>= 1)")
    add_loading_options(p, "predict")
    args = p.parse_args(argv)
    try:
        task, preds = predict_split(args.checkpoint, args.data, args.split, args.batch_size,
                                    args.allow_any_role, args.allow_other_task,
                                    args.max_positions)
        name = task.meta.task
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
