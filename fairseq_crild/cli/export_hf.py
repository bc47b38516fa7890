"""Export a distilled student to a Hugging Face BertForSequenceClassification folder
(crild_roberta students: RobertaForSequenceClassification).

``crild-export-hf`` is the installed command; ``python scripts/export_hf_classifier.py`` runs
the same ``main`` from a source checkout.

    crild-export-hf CHECKPOINT OUT_DIR --data DATA_BIN [--head-name glue]

OUT_DIR gets config.json (sizes, num_labels, id2label from the task's label names,
problem_type ``regression`` for STS-B), model.safetensors, vocab.txt (in fairseq dictionary
order, so ids agree) and tokenizer_config.json. A crild_roberta student's pooler and head
become the classifier's dense and out_proj, and OUT_DIR gets fairseq's dict.txt instead of a
BERT vocabulary (ids are its indices, text BPE-encoded as the data was; no token types).
Before OUT_DIR is written, transformers loads the folder and its logits are compared with
ours on the dev examples of DATA_BIN: the largest |difference| is printed, and above
--tolerance (1e-4) nothing is written. Heads that transformers cannot express
(``--classifier-activation relu``) are refused; use scripts/export_onnx.py for those.
Exit status: 0 written, 2 refused or failed.
"""

import argparse
import sys

from fairseq_crild.export.cli import check_output, load_source, run, source_parser


def main(argv=None) -> int:
    parser = source_parser(__doc__)
    parser.add_argument("out_dir", help="Hugging Face folder to write")
    parser.add_argument("--lowercase", default=None, action=argparse.BooleanOptionalAction,
                        help="BERT tokenizer lower-cases (default: as the data was prepared; "
                             "yes)")
    args = parser.parse_args(argv)

    def body() -> str:
        check_output(args, args.out_dir, "OUT_DIR")
        from fairseq_crild.export.hf_classifier import export_hf_classifier, hf_architecture

        clf, batches, inputs = load_source(args)
        if args.lowercase is not None:
            clf.lowercase = args.lowercase
        result = export_hf_classifier(clf, args.out_dir, batches, args.overwrite,
                                      args.tolerance)
        labels = ", ".join(clf.id2label.values())
        return (f"wrote {args.out_dir}: head {clf.head!r}, {clf.problem_type} ({labels})\n"
                + result.describe(f"transformers {hf_architecture(clf)}", inputs))

    return run("export_hf_classifier", body)


if __name__ == "__main__":
    sys.exit(main())
