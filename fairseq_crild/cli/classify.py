"""Classify sentences or sentence pairs with a trained checkpoint (teacher or distilled student).

``crild-classify`` is the installed command; ``python scripts/classify.py`` runs the same
``main`` from a source checkout.

    crild-classify runs/quickstart/runs/RTE/cr_ild/seed1/stage2/checkpoint_best.pt \\
        --pair "A man is playing a guitar." "A man plays an instrument."
    printf 'sentence one\\tsentence two\\n' | crild-classify CKPT --data data-bin/RTE

Reads ``--pair A B`` / ``--sentence S`` options, else tab-separated lines from ``--input``
(default: standard input; one sentence, or two separated by a tab, per line; UTF-8; blank
lines skipped). Inputs are truncated as in training: at the checkpoint's training
``--max-positions`` unless ``--max-positions`` says otherwise. Prints one line per example:
the label (or STS-B score) and, with ``--probs``, each label's probability. Bad input (no
examples, not UTF-8, a line that does not fit the task, a wrong checkpoint or data folder, a
--max-positions beyond the position table) ends with one line on stderr and exit status 2.
"""

import argparse
import os
import sys
from typing import Iterable, List, Tuple, Union

from fairseq_crild.errors import CrildError

Example = Union[str, Tuple[str, str]]
EXIT_BAD_INPUT = 2
EXIT_BROKEN_PIPE = 141  # what a tool killed by SIGPIPE reports (e.g. ``yes | head -1``)


class InputError(CrildError, ValueError):
    """A line of the input that cannot be classified; the message names source and line."""


def read_examples(lines: Iterable[Union[str, bytes]], source: str) -> List[Tuple[int, Example]]:
    """Tab-separated lines (str, or bytes decoded as UTF-8) -> (line number, sentence or (a, b)
    pair); blank lines are skipped, a line with more than one tab or that is not UTF-8 is an
    error naming ``source`` and the line number."""
    examples = []
    for number, line in enumerate(lines, 1):
        if isinstance(line, bytes):
            try:
                line = line.decode("utf-8")
            except UnicodeDecodeError as err:
                raise InputError(f"{source}:{number}: not UTF-8 text (byte "
                                 f"0x{line[err.start]:02x} at offset {err.start}); re-encode "
                                 "the input as UTF-8 (e.g. iconv -t UTF-8)") from None
        line = line.rstrip("\r\n")
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) > 2:
            raise InputError(f"{source}:{number}: {len(fields)} tab-separated fields; "
                             "give one sentence or two separated by one tab")
        examples.append((number, fields[0] if len(fields) == 1 else (fields[0], fields[1])))
    return examples


def check_shape(examples: List[Tuple[int, Example]], source: str, task: str, is_pair: bool
                ) -> None:
    """Every example fits the task: two sentences for a pair task, one otherwise."""
    for number, example in examples:
        where = f"{source}:{number}" if number else source  # 0: --pair / --sentence
        if is_pair and isinstance(example, str):
            raise InputError(f"{where}: one sentence, but {task} classifies sentence pairs: "
                             "separate the two sentences by a tab (or use --pair A B)")
        if not is_pair and not isinstance(example, str):
            raise InputError(f"{where}: two sentences, but {task} classifies single "
                             "sentences: give one sentence per line (or use --sentence S)")


def _read_input(path: str) -> List[Tuple[int, Example]]:
    if path == "-":
        return read_examples(sys.stdin.buffer, "<stdin>")
    if os.path.isdir(path):
        raise InputError(f"--input {path} is a folder; give a TSV file of examples "
                         "(or - for standard input)")
    try:
        with open(path, "rb") as f:
            return read_examples(f, path)
    except OSError as err:
        raise InputError(f"--input {path}: cannot read it ({err.strerror or err}); give a "
                         "readable TSV file of examples") from None


def _parser() -> argparse.ArgumentParser:
    from fairseq_crild.export.hub import add_loading_options

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
    p.add_argument("--batch-size", type=int, default=32, help="examples per forward pass (>= 1)")
    add_loading_options(p, "classify")
    return p


def _classify(args) -> List[str]:
    from fairseq_crild.export.hub import GlueClassifier
    from fairseq_crild.patches.checkpoint_safety import UnsafeCheckpointError

    if args.batch_size < 1:
        raise InputError(f"--batch-size {args.batch_size}: give a positive number of examples "
                         "per batch (e.g. 32)")
    given = [(0, tuple(x)) for x in args.pair] + [(0, s) for s in args.sentence]
    source = "the command line" if given else ("<stdin>" if args.input == "-" else args.input)
    examples = given or _read_input(args.input)
    if not examples:
        raise InputError(f"{source}: no examples (empty, or only blank lines); give one "
                         "sentence, or two separated by a tab, per line, or --pair/--sentence")
    try:
        clf = GlueClassifier.from_pretrained(args.checkpoint, data_name_or_path=args.data,
                                             max_positions=args.max_positions,
                                             allow_any_role=args.allow_any_role,
                                             allow_other_task=args.allow_other_task)
    except UnsafeCheckpointError as err:
        raise InputError(str(err)) from None
    except OSError as err:  # e.g. a checkpoint or data file that is missing or unreadable
        if err.filename and err.strerror:
            raise InputError(f"cannot read {err.filename}: {err.strerror}") from None
        raise InputError(str(err)) from None
    meta = clf.task.meta
    check_shape(examples, source, str(meta.task), meta.is_pair)
    logits = clf.logits([e for _, e in examples], args.batch_size)
    if clf.regression:
        return [f"{v:.4f}" for v in logits.tolist()]
    lines = [clf.labels[i] for i in logits.argmax(-1).tolist()]
    if args.probs:
        probs = logits.softmax(-1)
        lines = [line + "\t" + "\t".join(f"{n}={p:.4f}" for n, p in zip(clf.labels, row))
                 for line, row in zip(lines, probs.tolist())]
    return lines


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        lines = _classify(args)
    except (CrildError, ValueError, FileNotFoundError) as err:  # InputError, mismatches, ...
        print(f"classify: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        for line in lines:
            print(line)
        sys.stdout.flush()
    except BrokenPipeError:  # the reader stopped (| head -1): stop quietly, as cat/seq do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # no second error when Python flushes at exit
        return EXIT_BROKEN_PIPE
    return 0


if __name__ == "__main__":
    sys.exit(main())
