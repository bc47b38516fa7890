#!/usr/bin/env python
"""Classify sentences or sentence pairs with a trained checkpoint (teacher or distilled student).

    python scripts/classify.py runs/quickstart/stage2/checkpoint_best.pt \\
        --pair "A man is playing a guitar." "A man plays an instrument."
    printf 'sentence one\\tsentence two\\n' | python scripts/classify.py CKPT --data data-bin/RTE

Reads ``--pair A B`` / ``--sentence S`` options, else tab-separated lines from ``--input``
(default: standard input; one sentence, or two separated by a tab, per line). Prints one line
per example: the label (or STS-B score) and, with ``--probs``, each label's probability.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fairseq_crild.hub import GlueClassifier  # noqa: E402


def read_examples(lines, source: str):
    """Tab-separated lines -> sentences or (a, b) pairs; a line with more than one tab is an
    error naming ``source`` and the line number."""
    examples = []
    for number, line in enumerate(lines, 1):
        line = line.rstrip("\n")
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) > 2:
            raise ValueError(f"{source}:{number}: {len(fields)} tab-separated fields; "
                             "give one sentence or two separated by one tab")
        examples.append(fields[0] if len(fields) == 1 else (fields[0], fields[1]))
    return examples


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", help="checkpoint file, or a folder holding checkpoint_best.pt")
    p.add_argument("--data", default=None,
                   help="prepare_glue.py folder (dictionary, labels); default: the one the "
                        "checkpoint was trained on")
    p.add_argument("--pair", nargs=2, action="append", metavar=("A", "B"), default=[],
                   help="a sentence pair to classify (repeatable)")
    p.add_argument("--sentence", action="append", default=[],
                   help="a single sentence to classify (single-sentence tasks; repeatable)")
    p.add_argument("--input", default="-", help="TSV file of examples when no --pair/--sentence")
    p.add_argument("--probs", action="store_true", help="also print each label's probability")
    p.add_argument("--batch-size", type=int, default=32)
    args = p.parse_args(argv)
    try:
        examples = [tuple(x) for x in args.pair] + list(args.sentence)
        if not examples:
            if args.input == "-":
                examples = read_examples(sys.stdin, "<stdin>")
            else:
                with open(args.input, encoding="utf-8") as f:
                    examples = read_examples(f, args.input)
        clf = GlueClassifier.from_pretrained(args.checkpoint, data_name_or_path=args.data)
        predictions = clf.predict(examples, args.batch_size)
        probs = clf.predict_proba(examples, args.batch_size) if args.probs else None
    except (ValueError, FileNotFoundError) as err:
        print(f"classify: error: {err}", file=sys.stderr)
        return 2
    for i, pred in enumerate(predictions):
        line = f"{pred:.4f}" if isinstance(pred, float) else str(pred)
        if probs is not None:
            line += "\t" + "\t".join(f"{name}={p:.4f}" for name, p in zip(clf.labels, probs[i]))
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
