"""Export a distilled student's classification head to ONNX, checked with onnxruntime.

``crild-export-onnx`` is the installed command; ``python scripts/export_onnx.py`` runs the
same ``main`` from a source checkout.

    crild-export-onnx CHECKPOINT OUT.onnx --data DATA_BIN [--head-name glue]

Inputs ``input_ids``, ``token_type_ids``, ``attention_mask`` (int64, batch x sequence, both
dynamic; ids in fairseq dictionary order, as the vocab.txt written by
scripts/export_hf_classifier.py; crild_roberta students: ``input_ids`` and ``attention_mask``,
ids of the data's dict.txt), output ``logits`` (batch x labels); label names, the loss and
the padding id are in the file's metadata. Every head exports (the relu head too). Before
OUT.onnx is written, onnxruntime runs it on the dev examples of DATA_BIN in batches of
varying size and length: the largest |difference| from our logits is printed, and above
--tolerance (1e-4) nothing is written. Exit status: 0 written, 2 refused or failed.
"""

import os
import sys

from fairseq_crild.export.cli import check_output, load_source, run, source_parser


def main(argv=None) -> int:
    parser = source_parser(__doc__)
    parser.add_argument("out", help="ONNX file to write")
    parser.add_argument("--exporter", choices=("dynamo", "torchscript"), default="dynamo",
                        help="torch.onnx's torch.export-based exporter (needs onnxscript) or "
                             "its older TorchScript tracer")
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default: torch's)")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime threads (check)")
    args = parser.parse_args(argv)

    def body() -> str:
        check_output(args, args.out, "OUT")
        from fairseq_crild.export.onnx_export import export_onnx

        clf, batches, inputs = load_source(args)
        result = export_onnx(clf, args.out, batches, args.overwrite, args.exporter, args.opset,
                             args.tolerance, args.threads)
        return (f"wrote {args.out}: head {clf.head!r}, {clf.problem_type}, "
                f"{os.path.getsize(args.out) / 1e6:.1f} MB ({args.exporter} exporter)\n"
                + result.describe("onnxruntime", inputs))

    return run("export_onnx", body)


if __name__ == "__main__":
    sys.exit(main())
