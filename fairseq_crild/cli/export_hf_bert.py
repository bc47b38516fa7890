"""Export a fairseq ``bert`` checkpoint (e.g. a distilled student) to a Hugging Face folder.

``crild-export-hf-bert`` is the installed command; ``python scripts/export_hf_bert.py`` runs
the same ``main`` from a source checkout.

    crild-export-hf-bert CHECKPOINT OUT_DIR --dict dict.txt [--head-name NAME]

OUT_DIR gets config.json, model.safetensors, vocab.txt and tokenizer_config.json, loadable by
``transformers.BertForSequenceClassification.from_pretrained`` (or ``BertModel`` when the
checkpoint has no head). The vocabulary is written in fairseq dictionary order, with
``pad_token_id`` set accordingly, so ids agree between both toolkits. The tokenizer's
``model_max_length`` is the checkpoint's training ``--max-positions`` (the position table for a
conversion that records none); ``--max-positions`` changes it.
"""

import argparse
import dataclasses
import json
import os
import sys

from safetensors.torch import save_file

from fairseq_crild.dictionary import load_bert_dictionary
from fairseq_crild.errors import CrildError
from fairseq_crild.inference_length import inference_max_positions
from fairseq_crild.models.hf_conversion import (
    TOKENIZER_CONFIG,
    ConversionError,
    hf_config_from_bert,
    state_dict_to_hf,
)
from fairseq_crild.models.loading import load_bert
from fairseq_crild.outputs import (
    atomic_output_dir,
    check_not_an_input,
)


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
        cfg = dataclasses.asdict(model.cfg)
        cfg["classifier_activation"] = str(cfg["classifier_activation"])
        if cfg["classifier_activation"] != "none" and head is not None:
            raise ConversionError(
                "the head applies relu before its linear layer (--classifier-activation relu);"
                " transformers' BertForSequenceClassification cannot express that"
            )
        hf_cfg = hf_config_from_bert(cfg, len(dictionary), dictionary.pad())
        if head is None:
            hf_cfg["architectures"] = ["BertModel"]
        else:
            hf_cfg["num_labels"] = model.classification_heads[head].out_proj.out_features
        sd = state_dict_to_hf(model.state_dict(), model.num_layers, head)
        with atomic_output_dir(args.out_dir, args.overwrite) as tmp:
            save_file(sd, os.path.join(tmp, "model.safetensors"), metadata={"format": "pt"})
            with open(os.path.join(tmp, "config.json"), "w", encoding="utf-8") as f:
                json.dump(hf_cfg, f, indent=2)
            with open(os.path.join(tmp, "vocab.txt"), "w", encoding="utf-8") as f:
                f.writelines(dictionary[i] + "\n" for i in range(len(dictionary)))
            with open(os.path.join(tmp, TOKENIZER_CONFIG), "w", encoding="utf-8") as f:
                json.dump({"tokenizer_class": "BertTokenizer", "do_lower_case": args.lowercase,
                           "model_max_length": max_length}, f, indent=2)
    except (CrildError, FileNotFoundError, ValueError) as err:  # ConversionError, ...
        print(f"export_hf_bert: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {args.out_dir} (head: {head})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
