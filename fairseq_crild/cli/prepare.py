"""Tokenise and binarise a GLUE task for ``--task distill_glue``.

``crild-prepare`` is the installed command; ``python scripts/prepare_glue.py`` runs the same
``main`` from a source checkout.

    crild-prepare --glue-dir GLUE --task RTE --dict ckpt/minilm/dict.txt \\
        --out data-bin/RTE [--lowercase | --no-lowercase] [--workers N] [--overwrite]
        [--max-unk-rate 0.05] [--extra-columns refuse|drop-empty]

Tasks (case-insensitive; sts-b/stsb, sst-2/sst2, ax/diagnostic ... accepted): CoLA, SST-2,
MRPC, STS-B, QQP, MNLI (valid = dev_matched, valid_mm = dev_mismatched, test = test_matched,
test_mm = test_mismatched), QNLI, RTE, WNLI, AX (diagnostic set, test only). GLUE_DIR holds
the task folders as distributed (GLUE_DIR/RTE/train.tsv, ...). The output layout is described
in fairseq_crild/data/binarize.py. ``--workers N`` sets RAYON_NUM_THREADS (the tokenizers
library's threads; 1 also sets TOKENIZERS_PARALLELISM=false). Errors: one line on stderr, exit
status 2, and no output folder (an existing one is left untouched). Refused besides malformed
rows (file:line): an --out that is, holds or lies inside --glue-dir or --dict; a --dict that is
not a text dict.txt, or that leaves more than --max-unk-rate of the word pieces [UNK].
"""

import argparse
import sys

from fairseq_crild.cli._console import progress_on_stdout
from fairseq_crild.data.binarize import MAX_UNK_RATE, prepare_task
from fairseq_crild.data.glue_tasks import EXTRA_COLUMNS
from fairseq_crild.errors import CrildError


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--glue-dir", required=True, help="folder holding the task folders")
    parser.add_argument("--task", required=True, help="GLUE task name (case-insensitive)")
    parser.add_argument("--dict", required=True, help="dict.txt written by convert_hf_bert.py")
    parser.add_argument("--out", required=True, help="output folder (data-bin/TASK)")
    parser.add_argument("--lowercase", default=None, action=argparse.BooleanOptionalAction,
                        help="lower-case text (default: as tokenizer_config.json next to "
                        "--dict says, else yes)")
    parser.add_argument("--workers", type=int, default=None,
                        help="tokenizer threads (RAYON_NUM_THREADS; default: all cores)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing --out (only once the new one is complete)")
    parser.add_argument("--max-unk-rate", type=float, default=MAX_UNK_RATE,
                        help="largest share of [UNK] word pieces accepted, a guard against a "
                        "wrong --dict (default %(default)g; 1 accepts any; the authors' "
                        "scripts have no such check)")
    parser.add_argument("--extra-columns", choices=EXTRA_COLUMNS, default="refuse",
                        help="rows with more fields than the layout allows: refuse (default; "
                        "file:line) or drop-empty (drop extra fields that are all empty, e.g. "
                        "trailing tabs; others still refused). The authors' readers ignore "
                        "extra fields")
    args = parser.parse_args(argv)
    try:
        meta = prepare_task(args.glue_dir, args.task, args.dict, args.out, args.lowercase,
                            args.overwrite, args.workers, args.max_unk_rate,
                            args.extra_columns)
    except (CrildError, OSError, ValueError, RuntimeError) as err:  # OutputExistsError, ...
        print(f"prepare_glue: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"prepare_glue: interrupted; {args.out} not written", file=sys.stderr)
        return 130
    sizes = ", ".join(f"{k} {v}" for k, v in meta["splits"].items())
    print(f"wrote {args.out}: {meta['task']} ({sizes})")
    return 0


def console_main(argv=None) -> int:
    """The command: progress notes on stdout, so that stderr carries only warnings and the
    error line."""
    progress_on_stdout(("fairseq",))
    return main(argv)


if __name__ == "__main__":
    sys.exit(console_main())
