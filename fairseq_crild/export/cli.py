"""Command-line pieces the export scripts share (arguments, inputs, error reporting)."""

from __future__ import annotations

import argparse
import sys
from typing import Callable, List, Tuple

from fairseq_crild.export.student import (
    TOLERANCE,
    Batch,
    Classifier,
    check_batches,
    load_classifier,
)


def add_source_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="fairseq checkpoint of a student (bert or "
                        "crild_roberta) with a head")
    parser.add_argument("--data", default=None,
                        help="the prepare_glue.py (RoBERTa: prepare_glue_roberta.py) folder "
                             "the student was trained on: its dev "
                             "examples check the export, its meta.json names the labels and "
                             "its dict.txt is the default --dict (without it: random pairs)")
    parser.add_argument("--split", default="valid", help="split of --data to check on")
    parser.add_argument("--examples", type=int, default=64,
                        help="examples of --split to check on (batches of 1, 7 and 32)")
    parser.add_argument("--dict", default=None,
                        help="the model's dict.txt (default: DATA/input0/dict.txt, else "
                             "dict.txt next to the checkpoint)")
    parser.add_argument("--head-name", default=None,
                        help="head to export (default: the only head)")
    parser.add_argument("--tolerance", type=float, default=TOLERANCE,
                        help="largest |difference| of logits accepted (default %(default)g)")
    parser.add_argument("--max-positions", type=int, default=None,
                        help="longest input in tokens: the check batches are truncated to it "
                             "and it is the exported tokenizer's model_max_length (default: "
                             "the checkpoint's training --max-positions, as its dev "
                             "evaluation; at most the position table)")
    parser.add_argument("--allow-any-role", action="store_true",
                        help="export a checkpoint whatever role it records (default off: a "
                             "stage-1 ILD student, whose head was never trained, is refused)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")


def source_parser(doc: str) -> argparse.ArgumentParser:
    """An export command's parser: its docstring's first paragraph as the description and
    the options that name what is exported (:func:`add_source_args`)."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    add_source_args(parser)
    return parser


def check_output(args: argparse.Namespace, out: str, flag: str) -> None:
    """Refuses an output that is, holds or lies inside CHECKPOINT, --data or --dict (with
    --overwrite it would replace them)."""
    from fairseq_crild.outputs import check_not_an_input

    check_not_an_input(out, {"CHECKPOINT": args.checkpoint, "--data": args.data,
                             "--dict": args.dict}, flag)


def load_source(args: argparse.Namespace) -> Tuple[Classifier, List[Batch], str]:
    clf = load_classifier(args.checkpoint, args.dict, args.head_name, args.data,
                          args.max_positions, args.allow_any_role)
    batches = check_batches(clf, args.data, args.split, args.examples)
    pieces = "BPE-token" if clf.input_format == "roberta" else "word-piece"
    inputs = (f"{args.split} split of {args.data}" if args.data
              else f"random {pieces} pairs; pass --data for real examples")
    return clf, batches, inputs


def run(prog: str, body: Callable[[], str]) -> int:
    """Prints ``body``'s summary and returns 0, or prints why it failed and returns 2."""
    from fairseq_crild.errors import CrildError

    try:
        print(body())
    except (CrildError, ValueError, FileNotFoundError) as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    return 0
