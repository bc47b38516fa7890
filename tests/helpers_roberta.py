"""A tiny RoBERTa-layout GLUE folder built offline, shared by the RoBERTa tests."""

from __future__ import annotations

from pathlib import Path
from typing import Dict

from tests.conftest import run_script, write_rte_slice


def build_roberta_data(base: Path, script: bool = True) -> Dict[str, Path]:
    """{glue, data, spm}: a sentencepiece model trained on the tiny RTE slice and the folder
    scripts/prepare_glue_roberta.py writes with it (``script=False``: the same function
    in-process, for tests that do not test the script and need not pay its start-up)."""
    import sentencepiece as spm

    glue = base / "glue"
    write_rte_slice(str(glue / "RTE"))
    text = base / "text.txt"
    with open(text, "w", encoding="utf-8") as out:
        for split in ("train", "dev", "test"):
            with open(glue / "RTE" / f"{split}.tsv", encoding="utf-8") as f:
                out.writelines(" ".join(line.split("\t")[1:3]) + "\n" for line in f.readlines()[1:])
    spm.SentencePieceTrainer.train(input=str(text), model_prefix=str(base / "spm"),
                                   vocab_size=300, hard_vocab_limit=False, minloglevel=2)
    data = base / "data-bin"
    if script:
        run_script("scripts/prepare_glue_roberta.py", "--glue-dir", str(glue), "--task", "RTE",
                   "--bpe", "sentencepiece", "--sentencepiece-model", str(base / "spm.model"),
                   "--out", str(data))
    else:
        from fairseq_crild.data.roberta_data import prepare_roberta_task

        prepare_roberta_task(str(glue), "RTE", str(data), "sentencepiece",
                             sentencepiece_model=str(base / "spm.model"))
    return {"glue": glue, "data": data, "spm": base / "spm.model"}
