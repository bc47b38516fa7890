"""BPE-encode and binarise a GLUE task for RoBERTa teachers/students (fairseq's recipe).

``crild-prepare-roberta`` is the installed command; ``python scripts/prepare_glue_roberta.py``
runs the same ``main`` from a source checkout.

    # roberta.base / roberta.large (GPT-2 BPE; needs encoder.json + vocab.bpe: fairseq's URLs
    # by default, i.e. internet on first use, or local copies)
    crild-prepare-roberta --glue-dir GLUE --task RTE --bpe gpt2 \\
        --dict roberta.base/dict.txt --out data-bin/RTE-roberta \\
        [--gpt2-encoder-json encoder.json --gpt2-vocab-bpe vocab.bpe]
    # a sentencepiece RoBERTa (offline); without --dict the dictionary is the .model's pieces
    crild-prepare-roberta --glue-dir GLUE --task RTE --bpe sentencepiece \\
        --sentencepiece-model spm.model [--dict dict.txt] --out data-bin/RTE-roberta
    # text that is already BPE-encoded (space-separated symbols of dict.txt)
    crild-prepare-roberta --glue-dir GLUE_BPE --task RTE --bpe none \\
        --dict dict.txt --out data-bin/RTE-roberta

Writes input0/ input1/ label/ as fairseq's examples/roberta/preprocess_GLUE_tasks.sh does
(fairseq-preprocess with the model's dict.txt), plus index/ and meta.json; the folder trains
fairseq's ``sentence_prediction`` (``--init-token 0 --separator-token 2``) and our
``distill_glue`` alike. Layout details: fairseq_crild/data/roberta_data.py. Errors: one line
on stderr, exit status 2, and no output folder.
"""

import argparse
import sys

from fairseq_crild.cli._console import progress_on_stdout
from fairseq_crild.data.roberta_data import BPE_CHOICES, prepare_roberta_task
from fairseq_crild.errors import CrildError
from fairseq_crild.outputs import check_not_an_input


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--glue-dir", required=True, help="folder holding the task folders")
    parser.add_argument("--task", required=True, help="GLUE task name (case-insensitive)")
    parser.add_argument("--out", required=True, help="output folder (data-bin/TASK-roberta)")
    parser.add_argument("--bpe", required=True, choices=BPE_CHOICES,
                        help="fairseq BPE encoder: gpt2 (roberta.base/large), sentencepiece, "
                        "or none (the text is already BPE-encoded)")
    parser.add_argument("--dict", default=None,
                        help="the RoBERTa model's dict.txt (optional with sentencepiece: "
                        "then the .model's pieces)")
    parser.add_argument("--sentencepiece-model", default=None, help="sentencepiece .model")
    parser.add_argument("--gpt2-encoder-json", default=None,
                        help="GPT-2 encoder.json (default: fairseq's URL)")
    parser.add_argument("--gpt2-vocab-bpe", default=None,
                        help="GPT-2 vocab.bpe (default: fairseq's URL)")
    parser.add_argument("--workers", type=int, default=1, help="fairseq-preprocess workers")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing --out (only once the new one is complete)")
    args = parser.parse_args(argv)
    try:
        check_not_an_input(args.out, {
            "--glue-dir": args.glue_dir, "--dict": args.dict,
            "--sentencepiece-model": args.sentencepiece_model,
            "--gpt2-encoder-json": args.gpt2_encoder_json, "--gpt2-vocab-bpe": args.gpt2_vocab_bpe})
        meta = prepare_roberta_task(
            args.glue_dir, args.task, args.out, args.bpe, dict_path=args.dict,
            sentencepiece_model=args.sentencepiece_model,
            gpt2_encoder_json=args.gpt2_encoder_json, gpt2_vocab_bpe=args.gpt2_vocab_bpe,
            overwrite=args.overwrite, workers=args.workers)
    except (CrildError, OSError, ValueError, RuntimeError) as err:  # OutputExistsError, ...
        print(f"prepare_glue_roberta: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"prepare_glue_roberta: interrupted; {args.out} not written", file=sys.stderr)
        return 130
    sizes = ", ".join(f"{k} {v}" for k, v in meta["splits"].items())
    print(f"wrote {args.out}: {meta['task']} ({sizes}); vocabulary {meta['vocab_size']} "
          f"(with <mask>), <unk> {100 * meta['unk_rate']:.2f}% of tokens")
    return 0


def console_main(argv=None) -> int:
    """The command: progress notes on stdout, so that stderr carries only warnings and the
    error line."""
    progress_on_stdout(("fairseq", "fairseq_cli"))
    return main(argv)


if __name__ == "__main__":
    sys.exit(console_main())
