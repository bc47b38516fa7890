"""Export a fairseq ``bert`` checkpoint (e.g. a distilled student) to a Hugging Face folder.

``crild-export-hf-bert`` is the installed command; ``python scripts/export_hf_bert.py`` runs
the same ``main`` from a source checkout.

    crild-export-hf-bert CHECKPOINT OUT_DIR --dict dict.txt [--head-name NAME]

OUT_DIR gets config.json, model.safetensors, vocab.txt and tokenizer_config.json, loadable by
``transformers.BertForSequenceClassification.from_pretrained`` (or ``BertModel`` when the
checkpoint has no head). The vocabulary is written in fairseq dictionary order, with
``pad_token_id`` set accordingly, so ids agree between both toolkits. The tokenizer's
``model_max_length`` is the checkpoint's training ``--max-positions`` (the position table for a
conversion that records none); ``--max-positions`` changes it. Before OUT_DIR is written,
transformers loads the folder and runs it on random word-piece pairs next to our model, as the
classifier export checks its folder: the largest |difference| of the logits (with a head) or
of the last hidden states and pooled outputs (without) is printed, and above --tolerance
(1e-4) nothing is written. Needs transformers (the ``export`` extra). Exit status: 0 written,
2 refused or failed.
"""

import argparse
import os
import sys

from fairseq_crild.data.dictionary import load_bert_dictionary
from fairseq_crild.errors import CrildError
from fairseq_crild.export.inference_length import inference_max_positions
from fairseq_crild.export.student import TOLERANCE
from fairseq_crild.models.hf_conversion import ConversionError
from fairseq_crild.models.loading import load_bert
from fairseq_crild.outputs import check_not_an_input


def _default_dict(checkpoint: str) -> str:
    return os.path.join(os.path.dirname(os.path.abspath(checkpoint)), "dict.txt")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="fairseq checkpoint of the bert model")
    parser.add_argument("out_dir", help="Hugging Face folder to write")
    parser.add_argument("--dict", default=None,
                        help="the model's dict.txt (default: dict.txt next to the checkpoint)")
    parser.add_argument("--head-name", default=None,
                        help="head to export as the classifier (default: the only head)")
    parser.add_argument("--lowercase", default=True, action=argparse.BooleanOptionalAction,
                        help="tokenizer lower-cases (default: yes, as uncased BERT)")
    parser.add_argument("--max-positions", type=int, default=None,
                        help="the tokenizer's model_max_length (default: the checkpoint's "
                             "training --max-positions, else its position table)")
    parser.add_argument("--tolerance", type=float, default=TOLERANCE,
                        help="largest |difference| of outputs accepted (default %(default)g)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty OUT_DIR")
    args = parser.parse_args(argv)
    try:
        check_not_an_input(args.out_dir, {"CHECKPOINT": args.checkpoint, "--dict": args.dict},
                           "OUT_DIR")
        dictionary = load_bert_dictionary(args.dict or _default_dict(args.checkpoint))
        model, state = load_bert(args.checkpoint, dictionary)
        max_length = inference_max_positions(state, model.max_positions(), args.max_positions,
                                             args.checkpoint)
        heads = list(model.classification_heads.keys())
        head = args.head_name
        if head is None and len(heads) > 1:
            raise ConversionError(f"checkpoint has heads {heads}: choose one with --head-name")
        head = head or (heads[0] if heads else None)
        if head is not None and head not in heads:
            raise ConversionError(f"no head {head!r} in the checkpoint (it has {heads})")
        if str(model.cfg.classifier_activation) != "none" and head is not None:
            raise ConversionError(
                "the head applies relu before its linear layer (--classifier-activation relu);"
                " transformers' BertForSequenceClassification cannot express that"
            )
        from fairseq_crild.export.hf_bert import export_hf_bert

        result = export_hf_bert(model, dictionary, head, args.out_dir, args.lowercase,
                                max_length, args.overwrite, args.tolerance)
    except (CrildError, FileNotFoundError, ValueError) as err:  # ConversionError, ...
        print(f"export_hf_bert: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {args.out_dir} (head: {head})")
    print(result.describe("random word-piece pairs"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
