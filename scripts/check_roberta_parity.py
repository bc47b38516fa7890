#!/usr/bin/env python
"""Max |difference| between fairseq's RobertaModel and our conversion of the same checkpoint.

    python scripts/check_roberta_parity.py CHECKPOINT DATA [--head glue] [--split valid]
        [--batch 16] [--max-positions 128]

CHECKPOINT: a fairseq ``roberta`` checkpoint (e.g. fine-tuned with sentence_prediction);
DATA: a folder written by scripts/prepare_glue_roberta.py with the model's dict.txt. fairseq
builds its model from the checkpoint (and the task recorded in it, overridden to read DATA);
ours is the ``crild_roberta`` teacher ``distill_glue`` would load. Both run in eval mode on
the first ``--batch`` examples of ``--split`` (padded); prints the largest difference over
every layer's hidden states, the last features and the head's logits.
"""

import argparse
import logging
import os
import sys

logging.getLogger("fairseq").setLevel(logging.WARNING)


def main(argv=None) -> int:
    import torch
    from fairseq import checkpoint_utils

    from fairseq_crild.distill.teacher import FrozenTeacher
    from fairseq_crild.models.requests import FeatureRequest
    from fairseq_crild.tasks.distill_glue import DistillGlueConfig, DistillGlueTask

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("data")
    parser.add_argument("--head", default="glue", help="classification head name")
    parser.add_argument("--split", default="valid")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--max-positions", type=int, default=128)
    args = parser.parse_args(argv)

    task = DistillGlueTask.setup_task(DistillGlueConfig(
        data=args.data, max_positions=args.max_positions, seed=1))
    task.load_dataset(args.split)
    ds = task.datasets[args.split]
    batch = ds.collater([ds[i] for i in range(min(args.batch, len(ds)))])
    src = batch["net_input"]["src_tokens"]
    ours = FrozenTeacher.load(args.checkpoint, task.dictionary, args.head, task.num_classes,
                              task.label_names, os.path.join(args.data, "input0", "dict.txt"))
    models, _, _ = checkpoint_utils.load_model_ensemble_and_task(
        [args.checkpoint], arg_overrides={"data": args.data})
    ref = models[0].eval()
    with torch.no_grad():
        feats_ref, extra_ref = ref(src, features_only=True, return_all_hiddens=True)
        logits_ref, _ = ref(src, classification_head_name=args.head)
    feats, extra = ours(batch["net_input"], None, FeatureRequest(hidden_states=True))
    logits, _ = ours(batch["net_input"], args.head)
    hidden = max((a - b.transpose(0, 1)).abs().max().item()
                 for a, b in zip(extra["hidden_states"], extra_ref["inner_states"]))
    print(f"{len(src)} examples x {src.size(1)} tokens ({int(src.eq(1).sum())} padding), "
          f"{ours.num_layers} layers x {ours.hidden_size}")
    print(f"max |diff|: hidden states (all {len(extra['hidden_states'])}) {hidden:.2e}, "
          f"features {(feats - feats_ref).abs().max().item():.2e}, "
          f"logits {(logits - logits_ref).abs().max().item():.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
