"""GLUE readers on fixtures in every official layout, and their errors."""

import os

import pytest

from fairseq_crild.data.glue_formats import GlueFormatError, get_task, read_split, split_path
from tests.helpers_bert import GLUE_DIR

MNLI_TRAIN = ("index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\t"
              "sentence1_parse\tsentence2_parse\tsentence1\tsentence2\tlabel1\tgold_label")
MNLI_DEV = MNLI_TRAIN.replace("label1\tgold_label", "label1\tlabel2\tlabel3\tlabel4\tlabel5\t"
                              "gold_label")
MNLI_TEST = MNLI_TRAIN.replace("\tlabel1\tgold_label", "")

# task -> {file: text}, and the expected first example of each split
FIXTURES = {
    "CoLA": ({"train.tsv": "gj04\t1\t\tOur friends won't buy this.\n"
                           "gj04\t0\t*\tThey drank the pub.\n",
              "dev.tsv": "cj99\t1\t\tThe sailors rode the breeze.\n",
              "test.tsv": "index\tsentence\n0\tBill whistled past the house.\n"},
             {"train": ("0", "Our friends won't buy this.", None, "1"),
              "test": ("0", "Bill whistled past the house.", None, None)}),
    "SST-2": ({"train.tsv": "sentence\tlabel\nhide new secretions \t0\n",
               "dev.tsv": "sentence\tlabel\nit 's a charming journey . \t1\n",
               "test.tsv": "index\tsentence\n0\tuneasy mishmash\n"},
              {"valid": ("0", "it 's a charming journey . ", None, "1")}),
    "MRPC": ({"train.tsv": "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
                           "1\t702876\t702977\tAmrozi accused \"his brother\tReferring to him\n",
              "dev.tsv": "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n0\t1\t2\tA b\tC d\n",
              "test.tsv": "index\t#1 ID\t#2 ID\t#1 String\t#2 String\n0\t1\t2\tE f\tG h\n"},
             {"train": ("0", "Amrozi accused \"his brother", "Referring to him", "1"),
              "test": ("0", "E f", "G h", None)}),
    "STS-B": ({"train.tsv": "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\t"
                            "sentence1\tsentence2\tscore\n"
                            "0\tmain\tMSRvid\t2012\t0001\tnone\tnone\tA plane.\t"
                            "An air plane.\t5.000\n",
               "dev.tsv": "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\t"
                          "sentence2\tscore\n7\tg\tf\ty\to\ts\ts\tA\tB\t0.5\n",
               "test.tsv": "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\t"
                           "sentence1\tsentence2\n3\tg\tf\ty\to\ts\ts\tC\tD\n"},
              {"train": ("0", "A plane.", "An air plane.", 5.0), "valid": ("7", "A", "B", 0.5)}),
    "QQP": ({"train.tsv": "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n"
                          "133273\t213221\t213222\tHow is air?\tWhat is air?\t0\n",
             "dev.tsv": "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n5\t1\t2\tQ\tR\t1\n",
             "test.tsv": "id\tquestion1\tquestion2\n0\tWhy?\tHow?\n"},
            {"train": ("133273", "How is air?", "What is air?", "0"),
             "test": ("0", "Why?", "How?", None)}),
    "MNLI": ({"train.tsv": MNLI_TRAIN + "\n0\t31193\t31193n\tgov\t(x)\t(y)\t(X)\t(Y)\tConceptually "
                           "cream.\tProduct and geography.\tneutral\tneutral\n",
              "dev_matched.tsv": MNLI_DEV + "\n0\t1\t1e\tgov\tb\tb\tp\tp\tA\tB\tentailment\t"
                                 "entailment\tentailment\tentailment\tentailment\tentailment\n",
              "dev_mismatched.tsv": MNLI_DEV + "\n4\t1\t1c\tfic\tb\tb\tp\tp\tC\tD\tneutral\t"
                                    "contradiction\tneutral\tneutral\tneutral\tcontradiction\n",
              "test_matched.tsv": MNLI_TEST + "\n0\t1\t1\tgov\tb\tb\tp\tp\tE\tF\n",
              "test_mismatched.tsv": MNLI_TEST + "\n9\t1\t1\tgov\tb\tb\tp\tp\tG\tH\n"},
             {"train": ("0", "Conceptually cream.", "Product and geography.", "neutral"),
              "valid_mm": ("4", "C", "D", "contradiction"), "test_mm": ("9", "G", "H", None)}),
    "QNLI": ({"train.tsv": "index\tquestion\tsentence\tlabel\n0\tWhat?\tThis.\tnot_entailment\n",
              "dev.tsv": "index\tquestion\tsentence\tlabel\n0\tWho?\tHim.\tentailment\n",
              "test.tsv": "index\tquestion\tsentence\n0\tWhen?\tNow.\n"},
             {"train": ("0", "What?", "This.", "not_entailment")}),
    "RTE": ({"train.tsv": "index\tsentence1\tsentence2\tlabel\n0\tA b.\tC d.\tnot_entailment\n",
             "dev.tsv": "index\tsentence1\tsentence2\tlabel\n0\tE.\tF.\tentailment\n",
             "test.tsv": "index\tsentence1\tsentence2\n0\tG.\tH.\n"},
            {"valid": ("0", "E.", "F.", "entailment")}),
    "WNLI": ({"train.tsv": "index\tsentence1\tsentence2\tlabel\n0\tI stuck a pin.\tIt had.\t1\n",
              "dev.tsv": "index\tsentence1\tsentence2\tlabel\n0\tA\tB\t0\n",
              "test.tsv": "index\tsentence1\tsentence2\n0\tC\tD\n"},
             {"train": ("0", "I stuck a pin.", "It had.", "1")}),
}


def _write(folder, files):
    os.makedirs(folder, exist_ok=True)
    for name, text in files.items():
        with open(os.path.join(folder, name), "w", encoding="utf-8", newline="") as f:
            f.write(text)


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_every_task_layout(tmp_path, name):
    files, expected = FIXTURES[name]
    task = get_task(name)
    _write(str(tmp_path / task.folders[0]), files)
    for split in task.splits:
        examples = read_split(split_path(str(tmp_path), task, split), task, split)
        assert examples, split
        if split in expected:
            e = examples[0]
            assert (e.index, e.text_a, e.text_b, e.label) == expected[split]
        if split.startswith("test"):
            assert all(e.label is None for e in examples)


def test_ax_diagnostic_is_test_only(tmp_path):
    _write(str(tmp_path / "diagnostic"),
           {"diagnostic.tsv": "index\tsentence1\tsentence2\n"
                              "0\tThe cat sat.\tThe cat did not sit.\n"})
    task = get_task("ax")
    assert list(task.splits) == ["test"] and task.label_names[0] == "contradiction"
    (e,) = read_split(split_path(str(tmp_path), task, "test"), task, "test")
    assert (e.text_a, e.text_b, e.label) == ("The cat sat.", "The cat did not sit.", None)


def test_aliases():
    assert get_task("sts-b").name == get_task("STSB").name == "STS-B"
    assert get_task("sst2").name == "SST-2" and get_task("mnli").name == "MNLI"
    with pytest.raises(GlueFormatError, match="unknown GLUE task"):
        get_task("squad")


def test_bom_crlf_and_quotes(tmp_path):
    path = tmp_path / "train.tsv"
    path.write_bytes("\ufeffindex\tsentence1\tsentence2\tlabel\r\n0\tHe said \"hi.\tOk\"\t"
                     "entailment\r\n\r\n".encode("utf-8"))
    (e,) = read_split(str(path), get_task("RTE"), "train")
    assert (e.text_a, e.text_b, e.label) == ('He said "hi.', 'Ok"', "entailment")


@pytest.mark.parametrize("text,line,message", [
    ("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n1\tonly two\n", 3, "columns"),
    ("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n1\ta\tb\tmaybe\n", 3,
     "unknown label 'maybe'"),
    ("", None, "empty file"),
    ("index\tsentence1\tsentence2\tlabel\n", None, "header only"),
    ("index\tsentence1\tlabel\n0\ta\tentailment\n", 1, "no text_b column 'sentence2'"),
])
def test_errors_name_file_and_line(tmp_path, text, line, message):
    path = tmp_path / "train.tsv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(GlueFormatError) as err:
        read_split(str(path), get_task("RTE"), "train")
    msg = str(err.value)
    assert str(path) in msg and message in msg
    if line is not None:
        assert f"{path}:{line}:" in msg


def test_bad_score_and_missing_split(tmp_path):
    task = get_task("STS-B")
    path = tmp_path / "train.tsv"
    path.write_text("index\tsentence1\tsentence2\tscore\n0\tA\tB\tfive\n", encoding="utf-8")
    with pytest.raises(GlueFormatError, match=r"train.tsv:2: score 'five'"):
        read_split(str(path), task, "train")
    with pytest.raises(GlueFormatError, match="file not found"):
        read_split(str(tmp_path / "nope.tsv"), task, "valid")


@pytest.mark.skipif(not os.path.isdir(GLUE_DIR), reason="../shared/data/glue not present")
@pytest.mark.parametrize("name,sizes", [
    ("RTE", {"train": 2490, "valid": 277, "test": 3000}),
    ("CoLA", {"train": 8551, "valid": 1043, "test": 1063}),
    ("STS-B", {"train": 5749, "valid": 1500, "test": 1379}),
    ("WNLI", {"train": 635, "valid": 71, "test": 146}),
])
def test_real_glue_sizes(name, sizes):
    task = get_task(name)
    for split, n in sizes.items():
        assert len(read_split(split_path(GLUE_DIR, task, split), task, split)) == n
