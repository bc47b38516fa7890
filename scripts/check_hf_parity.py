#!/usr/bin/env python
"""Max |difference| between our converted BERT and transformers' BertModel on real pairs.

    python scripts/check_hf_parity.py [HF_DIR|minilm] [--glue-dir GLUE] [--pairs 32]

Prints the largest absolute differences of the last hidden states and pooled outputs (eval
mode, padded batch of RTE dev pairs). Needs transformers (a test extra).
"""

import argparse
import csv
import os
import sys
import tempfile

import torch

from fairseq_crild.data.dictionary import load_bert_dictionary
from fairseq_crild.models import FeatureRequest
from fairseq_crild.models.loading import load_bert
from fairseq_crild.models.pretrained import resolve_hf_dir


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("hf_dir", nargs="?", default="minilm")
    p.add_argument("--glue-dir", default=os.environ.get("GLUE_DIR", "../shared/data/glue"))
    p.add_argument("--pairs", type=int, default=32)
    args = p.parse_args(argv)
    import transformers

    from fairseq_crild.cli.convert import main as convert

    hf_dir = resolve_hf_dir(args.hf_dir)
    with open(os.path.join(args.glue_dir, "RTE", "dev.tsv"), encoding="utf-8") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[1:args.pairs + 1]
    tok = transformers.BertTokenizerFast.from_pretrained(hf_dir)
    batch = tok([r[1] for r in rows], [r[2] for r in rows], padding=True, truncation=True,
                max_length=128, return_tensors="pt")
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "ours")
        convert([hf_dir, out])
        d = load_bert_dictionary(os.path.join(out, "dict.txt"))
        ours, _ = load_bert(os.path.join(out, "model.pt"), d)
    remap = torch.tensor([d.index(t) for t in tok.convert_ids_to_tokens(list(range(len(tok))))])
    hf = transformers.BertModel.from_pretrained(hf_dir).eval()
    ours.eval()
    with torch.no_grad():
        ref = hf(**batch)
        feats, extra = ours(remap[batch["input_ids"]], token_type_ids=batch["token_type_ids"],
                            request=FeatureRequest(pooled_output=True))
    real = batch["attention_mask"].bool()
    print(f"{len(rows)} RTE dev pairs, padded to {batch['input_ids'].shape[1]} tokens "
          f"({int((~real).sum())} padding positions)")
    print(f"max |diff| last hidden state: {(feats - ref.last_hidden_state).abs().max():.3e} "
          f"(real tokens only: {(feats - ref.last_hidden_state)[real].abs().max():.3e})")
    pooled = (extra["pooled_output"] - ref.pooler_output).abs().max()
    print(f"max |diff| pooled output:     {pooled:.3e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
