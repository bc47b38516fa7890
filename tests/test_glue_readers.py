"""GLUE readers: every official layout (fixtures written here), quirks, and every error."""

import os

import pytest

from fairseq_crild.data.glue_tasks import (
    TASKS,
    GlueFormatError,
    get_task,
    label_ids,
    read_split,
    read_tsv,
    split_path,
)
from tests.helpers_bert import GLUE_DIR

MNLI_HEAD = ("index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\t"
             "sentence1_parse\tsentence2_parse\tsentence1\tsentence2")
MNLI_TRAIN = MNLI_HEAD + "\tlabel1\tgold_label\n"
MNLI_DEV = MNLI_HEAD + "\tlabel1\tlabel2\tlabel3\tlabel4\tlabel5\tgold_label\n"
MNLI_TEST = MNLI_HEAD + "\n"
STSB_HEAD = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2"
MRPC_HEAD = "#1 ID\t#2 ID\t#1 String\t#2 String\n"
QQP_HEAD = "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n"

# task -> ({file name: contents}, {split: [(id, text_a, text_b, label), ...]})
FIXTURES = {
    "CoLA": (
        {"train.tsv": "gj04\t1\t\tOur friends won't buy this analysis.\n"
                      "gj04\t0\t*\tThey drank the pub.\n",
         "dev.tsv": "cj99\t1\t\tThe sailors rode the breeze.",  # no final newline (real file)
         "test.tsv": "index\tsentence\n0\tBill whistled past the house.\n"
                     "1\tThe car honked.\n"},
        {"train": [("0", "Our friends won't buy this analysis.", None, "1"),
                   ("1", "They drank the pub.", None, "0")],
         "valid": [("0", "The sailors rode the breeze.", None, "1")],
         "test": [("0", "Bill whistled past the house.", None, None),
                  ("1", "The car honked.", None, None)]}),
    "SST-2": (
        {"train.tsv": "sentence\tlabel\nhide new secretions \t0\ncontains no wit \t0\n",
         "dev.tsv": "sentence\tlabel\nit 's a charming journey . \t1\n",
         "test.tsv": "index\tsentence\n0\tuneasy mishmash\n"},
        {"train": [("0", "hide new secretions ", None, "0"),
                   ("1", "contains no wit ", None, "0")],
         "valid": [("0", "it 's a charming journey . ", None, "1")],
         "test": [("0", "uneasy mishmash", None, None)]}),
    "MRPC": (
        {"train.tsv": "Quality\t" + MRPC_HEAD +
                      "1\t702876\t702977\tAmrozi accused \"his brother\tReferring to him\n",
         "dev.tsv": "Quality\t" + MRPC_HEAD + "0\t1\t2\tA b\tC d\n",
         "test.tsv": "index\t" + MRPC_HEAD + "0\t1089874\t1089925\tE f\tG h\n"},
        {"train": [("0", 'Amrozi accused "his brother', "Referring to him", "1")],
         "valid": [("0", "A b", "C d", "0")],
         "test": [("0", "E f", "G h", None)]}),
    "STS-B": (
        {"train.tsv": STSB_HEAD + "\tscore\n"
                      "0\tmain\tMSRvid\t2012\t0001\tnone\tnone\tA plane.\tAn air plane.\t5.000\n",
         "dev.tsv": STSB_HEAD + "\tscore\n7\tg\tf\ty\to\ts\ts\tA\tB\t0.5\n",
         "test.tsv": STSB_HEAD + "\n3\tg\tf\ty\to\ts\ts\tC\tD\n"},
        {"train": [("0", "A plane.", "An air plane.", 5.0)],
         "valid": [("7", "A", "B", 0.5)],
         "test": [("3", "C", "D", None)]}),
    "QQP": (
        {"train.tsv": QQP_HEAD + "133273\t213221\t213222\tHow is air?\tWhat is air?\t0\n",
         "dev.tsv": QQP_HEAD + "5\t1\t2\tQ\tR\t1\n",
         "test.tsv": "id\tquestion1\tquestion2\n0\tWhy?\tHow?\n"},
        {"train": [("133273", "How is air?", "What is air?", "0")],
         "valid": [("5", "Q", "R", "1")],
         "test": [("0", "Why?", "How?", None)]}),
    "MNLI": (
        {"train.tsv": MNLI_TRAIN + "0\t31193\t31193n\tgov\t( x )\t( y )\t(ROOT x)\t(ROOT y)\t"
                      "Conceptually cream.\tProduct and geography.\tneutral\tneutral\n",
         "dev_matched.tsv": MNLI_DEV + "0\t1\t1e\tgov\tb\tb\tp\tp\tA\tB\tentailment\t"
                            "entailment\tneutral\tentailment\tentailment\tentailment\n",
         "dev_mismatched.tsv": MNLI_DEV + "4\t1\t1c\tfic\tb\tb\tp\tp\tC\tD\tneutral\t"
                               "contradiction\tcontradiction\tneutral\tcontradiction\t"
                               "contradiction\n",
         "test_matched.tsv": MNLI_TEST + "0\t1\t1\tgov\tb\tb\tp\tp\tE\tF\n",
         "test_mismatched.tsv": MNLI_TEST + "9\t1\t1\tgov\tb\tb\tp\tp\tG\tH\n"},
        {"train": [("0", "Conceptually cream.", "Product and geography.", "neutral")],
         "valid": [("0", "A", "B", "entailment")],
         "valid_mm": [("4", "C", "D", "contradiction")],
         "test": [("0", "E", "F", None)],
         "test_mm": [("9", "G", "H", None)]}),
    "QNLI": (
        {"train.tsv": "index\tquestion\tsentence\tlabel\n0\tWhat?\tThis.\tnot_entailment\n",
         "dev.tsv": "index\tquestion\tsentence\tlabel\n0\tWho?\tHim.\tentailment\n",
         "test.tsv": "index\tquestion\tsentence\n0\tWhen?\tNow.\n"},
        {"train": [("0", "What?", "This.", "not_entailment")],
         "valid": [("0", "Who?", "Him.", "entailment")],
         "test": [("0", "When?", "Now.", None)]}),
    "RTE": (
        {"train.tsv": "index\tsentence1\tsentence2\tlabel\n0\tA b.\tC d.\tnot_entailment\n"
                      "1\tX.\tY.\tentailment\n",
         "dev.tsv": "index\tsentence1\tsentence2\tlabel\n0\tE.\tF.\tentailment\n",
         "test.tsv": "index\tsentence1\tsentence2\n0\tG.\tH.\n"},
        {"train": [("0", "A b.", "C d.", "not_entailment"), ("1", "X.", "Y.", "entailment")],
         "valid": [("0", "E.", "F.", "entailment")],
         "test": [("0", "G.", "H.", None)]}),
    "WNLI": (
        {"train.tsv": "index\tsentence1\tsentence2\tlabel\n0\tI stuck a pin.\tIt had.\t1\n",
         "dev.tsv": "index\tsentence1\tsentence2\tlabel\n0\tA\tB\t0\n",
         "test.tsv": "index\tsentence1\tsentence2\n0\tC\tD\n"},
        {"train": [("0", "I stuck a pin.", "It had.", "1")],
         "valid": [("0", "A", "B", "0")],
         "test": [("0", "C", "D", None)]}),
    "AX": (
        {"AX.tsv": "index\tsentence1\tsentence2\n0\tThe cat sat.\tThe cat did not sit.\n"},
        {"test": [("0", "The cat sat.", "The cat did not sit.", None)]}),
    # unlabelled supplementary text, directly in the folder given as GLUE_DIR
    "PAIRS": (
        {"train.tsv": "sentence1\tsentence2\nthe cat sat .\ta dog ran .\nno second one\t\n",
         "dev.tsv": "sentence1\tsentence2\nA\tB\n"},
        {"train": [("0", "the cat sat .", "a dog ran .", None), ("1", "no second one", "", None)],
         "valid": [("0", "A", "B", None)]}),
}


def write_files(folder, files):
    os.makedirs(folder, exist_ok=True)
    for name, text in files.items():
        with open(os.path.join(folder, name), "w", encoding="utf-8", newline="") as f:
            f.write(text)


def _rows(examples):
    return [(e.index, e.text_a, e.text_b, e.label) for e in examples]


def test_fixtures_cover_every_task():
    assert sorted(FIXTURES) == sorted(TASKS)


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_every_task_layout(tmp_path, name):
    files, expected = FIXTURES[name]
    task = get_task(name)
    write_files(str(tmp_path / task.folder), files)
    assert set(task.splits) == set(expected)
    for split in task.splits:
        assert _rows(read_split(str(tmp_path), task, split)) == expected[split], split


def test_task_specs():
    assert get_task("mnli").label_names == ("contradiction", "entailment", "neutral")
    assert get_task("MNLI").splits == ("train", "valid", "valid_mm", "test", "test_mm")
    assert get_task("rte").label_names == get_task("qnli").label_names == (
        "entailment", "not_entailment")
    for name in ("CoLA", "SST-2", "MRPC", "QQP", "WNLI"):
        assert get_task(name).label_names == ("0", "1")
    assert get_task("cola").main_metric == "mcc"
    assert get_task("mrpc").metrics == get_task("qqp").metrics == ("f1", "accuracy")
    sts = get_task("stsb")
    assert sts.regression and sts.num_classes == 1 and sts.metrics == ("pearson", "spearman")
    assert get_task("rte").main_metric == "accuracy" and get_task("rte").num_classes == 2
    assert not get_task("cola").is_pair and get_task("rte").is_pair
    ax = get_task("ax")
    assert ax.splits == ("test",) and ax.optional_splits == () and ax.num_classes == 3
    assert get_task("rte").optional_splits == ("test",)
    assert get_task("mnli").optional_splits == ("test", "test_mm")
    pairs = get_task("pairs")
    assert pairs.optional_splits == ("valid",) and not pairs.has_labels("train")
    assert get_task("rte").has_labels("valid") and not get_task("rte").has_labels("test")


def test_aliases():
    assert get_task("sts-b").name == get_task("STSB").name == get_task("StS_b").name == "STS-B"
    assert get_task("sst2").name == get_task("SST-2").name == "SST-2"
    assert get_task("mnli").name == get_task("MNLI-mm").name == "MNLI"
    assert get_task("diagnostic").name == get_task("ax").name == "AX"
    with pytest.raises(GlueFormatError, match="unknown GLUE task 'squad'"):
        get_task("squad")


def test_ax_in_the_diagnostic_folder(tmp_path):
    write_files(str(tmp_path / "diagnostic"),
                {"diagnostic.tsv": "index\tsentence1\tsentence2\n0\tA\tB\n1\tC\tD\n"})
    task = get_task("AX")
    assert split_path(str(tmp_path), task, "test").endswith(
        os.path.join("diagnostic", "diagnostic.tsv"))
    assert _rows(read_split(str(tmp_path), task, "test")) == [
        ("0", "A", "B", None), ("1", "C", "D", None)]


def test_pairs_without_sentence2(tmp_path):
    write_files(str(tmp_path), {"train.tsv": "sentence1\nJust one.\nAnother\n"})
    assert _rows(read_split(str(tmp_path), get_task("PAIRS"), "train")) == [
        ("0", "Just one.", None, None), ("1", "Another", None, None)]


def test_label_ids_follow_label_names(tmp_path):
    files, _ = FIXTURES["MNLI"]
    write_files(str(tmp_path / "MNLI"), files)
    task = get_task("MNLI")
    assert label_ids(task, read_split(str(tmp_path), task, "valid_mm")) == [0]
    assert label_ids(task, read_split(str(tmp_path), task, "train")) == [2]


def test_bom_crlf_and_unbalanced_quotes(tmp_path):
    path = tmp_path / "train.tsv"
    path.write_bytes("\ufeffindex\tsentence1\tsentence2\tlabel\r\n"
                     "0\tHe said \"hi.\tOk\"\tentailment\r\n"
                     "1\t\"Quoted\" \"\"twice\tcafé\tnot_entailment\r\n\r\n\n".encode("utf-8"))
    examples = read_tsv(str(path), get_task("RTE"), "train")
    assert _rows(examples) == [("0", 'He said "hi.', 'Ok"', "entailment"),
                               ("1", '"Quoted" ""twice', "café", "not_entailment")]
    assert [e.line for e in examples] == [2, 3]


def test_bom_on_headerless_cola(tmp_path):
    path = tmp_path / "train.tsv"
    path.write_bytes("\ufeffgj04\t1\t\tA \"b.\r\n".encode("utf-8"))
    assert _rows(read_tsv(str(path), get_task("CoLA"), "train")) == [("0", 'A "b.', None, "1")]


def test_columns_found_by_header_name(tmp_path):
    path = tmp_path / "train.tsv"  # columns reordered: the header decides
    path.write_text("label\tsentence2\tindex\tsentence1\nentailment\tB\t12\tA\n", encoding="utf-8")
    assert _rows(read_tsv(str(path), get_task("RTE"), "train")) == [("12", "A", "B", "entailment")]


RTE_HEAD = "index\tsentence1\tsentence2\tlabel\n"


@pytest.mark.parametrize("task,text,line,message", [
    ("RTE", RTE_HEAD + "0\ta\tb\tentailment\n1\tonly two\n", 3,
     "2 column(s), expected at least 4"),
    ("CoLA", "gj04\t1\t\tFine.\ngj04\t1\n", 2, "2 column(s), expected at least 4"),
    ("RTE", RTE_HEAD + "0\ta\tb\tentailment\n1\ta\tb\tmaybe\n", 3, "unknown label 'maybe'"),
    ("MNLI", MNLI_TRAIN + "0\t1\t1\tg\tb\tb\tp\tp\tA\tB\t-\t-\n", 2, "unknown label '-'"),
    ("CoLA", "gj04\t1\t\tFine.\ngj04\t2\t\tBad.\n", 2, "unknown label '2'"),
    ("RTE", "", None, "empty file"),
    ("CoLA", "\n\n", None, "empty file"),
    ("RTE", RTE_HEAD, None, "header only"),
    ("RTE", RTE_HEAD + "\n", None, "header only"),
    ("RTE", "index\tsentence1\tlabel\n0\ta\tentailment\n", 1, "no text_b column 'sentence2'"),
    ("RTE", RTE_HEAD + "0\ta\tb\tentailment\n\n1\ta\tb\tentailment\n", 3, "blank line"),
    ("STS-B", STSB_HEAD + "\tscore\n0\tg\tf\ty\to\ts\ts\tA\tB\t1.0\n"
              "1\tg\tf\ty\to\ts\ts\tA\tB\tfive\n", 3, "score 'five' is not a finite number"),
    ("STS-B", STSB_HEAD + "\tscore\n0\tg\tf\ty\to\ts\ts\tA\tB\tnan\n", 2, "score 'nan'"),
])
def test_errors_name_file_and_line(tmp_path, task, text, line, message):
    path = tmp_path / "train.tsv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(GlueFormatError) as err:
        read_tsv(str(path), get_task(task), "train")
    msg = str(err.value)
    assert str(path) in msg and message in msg, msg
    if line is not None:
        assert f"{path}:{line}:" in msg
    assert "\n" not in msg


def test_bad_utf8_names_the_line(tmp_path):
    path = tmp_path / "dev.tsv"
    path.write_bytes(RTE_HEAD.encode() + b"0\ta\tb\tentailment\n1\ta\xff\tb\tentailment\n")
    with pytest.raises(GlueFormatError, match=r"dev.tsv:3: not UTF-8"):
        read_tsv(str(path), get_task("RTE"), "valid")


def test_missing_split_names_path_and_task(tmp_path):
    write_files(str(tmp_path / "MNLI"), {"train.tsv": FIXTURES["MNLI"][0]["train.tsv"]})
    task = get_task("mnli")
    with pytest.raises(GlueFormatError) as err:
        read_split(str(tmp_path), task, "valid_mm")
    msg = str(err.value)
    assert os.path.join(str(tmp_path), "MNLI", "dev_mismatched.tsv") in msg
    assert "MNLI" in msg and "valid_mm" in msg and "file not found" in msg
    with pytest.raises(GlueFormatError, match="no split 'valid_mm'"):
        split_path(str(tmp_path), get_task("rte"), "valid_mm")


REAL_SIZES = {
    # lines (README) minus the header; CoLA train/dev have no header and dev.tsv lacks a
    # final newline (wc -l says 1042 for its 1043 rows)
    "RTE": {"train": 2490, "valid": 277, "test": 3000},
    "CoLA": {"train": 8551, "valid": 1043, "test": 1063},
    "STS-B": {"train": 5749, "valid": 1500, "test": 1379},
    "WNLI": {"train": 635, "valid": 71, "test": 146},
}


@pytest.mark.skipif(not os.path.isdir(GLUE_DIR),
                    reason=f"real GLUE data not found at {os.path.abspath(GLUE_DIR)}")
@pytest.mark.parametrize("name", sorted(REAL_SIZES))
def test_real_glue_sizes(name):
    task = get_task(name)
    for split, n in REAL_SIZES[name].items():
        examples = read_split(GLUE_DIR, task, split)
        assert len(examples) == n, split
        assert all(e.text_a for e in examples)
        if not task.has_labels(split):
            assert all(e.label is None for e in examples)
            assert [e.index for e in examples] == [str(i) for i in range(n)]
        elif task.regression:
            assert all(0.0 <= e.label <= 5.0 for e in examples)
        else:
            assert {e.label for e in examples} == set(task.label_names)


# ------------------------------------------------------------ no silent mis-parse
@pytest.mark.parametrize("task,split,text,line,fields,allowed", [
    # a tab inside sentence1 of an unlabelled split: sentence2 would be its second half
    ("RTE", "test", "index\tsentence1\tsentence2\n0\tA\tB\n1\tHalf of\tit\tB\n", 3, 4, 3),
    ("WNLI", "test", "index\tsentence1\tsentence2\n0\tA\tB\t\n", 2, 4, 3),
    ("SST-2", "test", "index\tsentence\n0\tgood\tfilm\n", 2, 3, 2),
    ("CoLA", "test", "index\tsentence\n0\tA cat.\n1\tA\tdog.\n", 3, 3, 2),
    # headerless CoLA: a stray tab in the sentence
    ("CoLA", "train", "gj04\t1\t\tFine.\ngj04\t0\t*\tThey\tdrank.\n", 2, 5, 4),
    ("RTE", "train", RTE_HEAD + "0\ta\tb\tentailment\textra\n", 2, 5, 4),
    ("STS-B", "valid", STSB_HEAD + "\tscore\n0\tg\tf\ty\to\ts\ts\tA\tB\t1.0\t4.0\n", 2, 11, 10),
    ("MNLI", "test_mm", MNLI_TEST + "9\t1\t1\tgov\tb\tb\tp\tp\tG\tH\tI\n", 2, 11, 10),
])
def test_more_fields_than_the_layout_allows_are_refused(tmp_path, task, split, text, line,
                                                         fields, allowed):
    path = tmp_path / "file.tsv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(GlueFormatError) as err:
        read_tsv(str(path), get_task(task), split)
    msg = str(err.value)
    assert msg.startswith(f"{path}:{line}: {fields} fields, the layout allows {allowed}"), msg
    assert "\n" not in msg


def test_drop_empty_extra_columns_is_explicit(tmp_path, caplog):
    """Trailing tabs (empty extra fields) are dropped only on request, and counted; a
    non-empty extra field is refused either way."""
    path = tmp_path / "test.tsv"
    path.write_text("index\tsentence1\tsentence2\n0\tA\tB\t\n1\tC\tD\n2\tE\tF\t \t\n",
                    encoding="utf-8")
    rte = get_task("RTE")
    with pytest.raises(GlueFormatError, match=r"test.tsv:2: 4 fields"):
        read_tsv(str(path), rte, "test")
    with caplog.at_level("WARNING", logger="fairseq_crild.data.glue_tasks"):
        examples = read_tsv(str(path), rte, "test", extra_columns="drop-empty")
    assert _rows(examples) == [("0", "A", "B", None), ("1", "C", "D", None),
                               ("2", "E", "F", None)]
    assert any("empty extra field(s) of 2 row(s)" in r.message for r in caplog.records)
    path.write_text("index\tsentence1\tsentence2\n0\tA\tB\tC\n", encoding="utf-8")
    with pytest.raises(GlueFormatError, match=r"test.tsv:2: 4 fields.*first extra field: 'C'"):
        read_tsv(str(path), rte, "test", extra_columns="drop-empty")
    with pytest.raises(ValueError, match="extra_columns must be one of refuse, drop-empty"):
        read_tsv(str(path), rte, "test", extra_columns="ignore")


def test_stsb_scores_outside_0_5_are_warned_about_and_kept(tmp_path, caplog):
    path = tmp_path / "train.tsv"
    rows = [("0", "2.5"), ("1", "5.5"), ("2", "5.0"), ("3", "-0.25"), ("4", "0")]
    path.write_text(STSB_HEAD + "\tscore\n" + "".join(
        f"{i}\tg\tf\ty\to\ts\ts\tA\tB\t{s}\n" for i, s in rows), encoding="utf-8")
    with caplog.at_level("WARNING", logger="fairseq_crild.data.glue_tasks"):
        examples = read_tsv(str(path), get_task("STS-B"), "train")
    assert [e.label for e in examples] == [2.5, 5.5, 5.0, -0.25, 0.0]
    warnings = [r.message for r in caplog.records]
    assert warnings == [f"{path}:3: score 5.5 outside [0, 5] (STS-B's range); 2 such score(s) "
                        "in the file, kept as written"]
    caplog.clear()
    path.write_text(STSB_HEAD + "\tscore\n0\tg\tf\ty\to\ts\ts\tA\tB\t5\n", encoding="utf-8")
    with caplog.at_level("WARNING", logger="fairseq_crild.data.glue_tasks"):
        read_tsv(str(path), get_task("STS-B"), "train")
    assert caplog.records == []


@pytest.mark.parametrize("task,split,header", [
    ("RTE", "train", RTE_HEAD), ("CoLA", "train", ""), ("RTE", "test",
                                                        "index\tsentence1\tsentence2\n")])
def test_a_lone_cr_file_gives_a_short_error(tmp_path, task, split, header):
    """CR-only line ends make the whole file one line: the error says so in a few hundred
    characters instead of echoing the file (it was a 12.9 KB line)."""
    path = tmp_path / "file.tsv"
    if task == "CoLA":
        body = "".join(f"gj04\t1\t\tSentence number {i} is long enough.\n" for i in range(400))
    else:
        body = "".join(f"{i}\tSentence {i} with some words.\tAnother one.\t"
                       + ("entailment\n" if split == "train" else "\n") for i in range(400))
        body = body.replace("\t\n", "\n")
    path.write_bytes((header + body).replace("\n", "\r").encode("utf-8"))
    assert path.stat().st_size > 12000
    with pytest.raises(GlueFormatError) as err:
        read_tsv(str(path), get_task(task), split)
    msg = str(err.value)
    assert len(msg) < 700 and "\n" not in msg and msg.startswith(f"{path}:1: "), msg
    assert "carriage return(s): CR-only line ends? convert them to \\n" in msg


def test_long_cells_are_echoed_capped(tmp_path):
    path = tmp_path / "train.tsv"
    path.write_text(RTE_HEAD + "0\ta\tb\t" + "x" * 5000 + "\n", encoding="utf-8")
    with pytest.raises(GlueFormatError) as err:
        read_tsv(str(path), get_task("RTE"), "train")
    assert str(err.value).endswith(f"unknown label {'x' * 40!r}... (5000 characters) (RTE "
                                   "labels: entailment, not_entailment)")


def test_a_header_naming_a_column_twice_is_refused(tmp_path):
    path = tmp_path / "train.tsv"
    path.write_text("index\tsentence1\tsentence1\tsentence2\tlabel\n0\ta\tb\tc\tentailment\n",
                    encoding="utf-8")
    with pytest.raises(GlueFormatError, match=r"train.tsv:1: header names the text_a column "
                                              r"'sentence1' twice"):
        read_tsv(str(path), get_task("RTE"), "train")


@pytest.mark.skipif(not os.path.isdir(GLUE_DIR),
                    reason=f"real GLUE data not found at {os.path.abspath(GLUE_DIR)}")
def test_real_files_have_exactly_the_layouts_fields():
    """Why refusing extra fields costs nothing on the real data: every row of every real
    file has exactly as many fields as its layout allows (no extra trailing column)."""
    for name in sorted(REAL_SIZES):
        task = get_task(name)
        for split in task.splits:
            path = split_path(GLUE_DIR, task, split)
            with open(path, "rb") as f:
                counts = {ln.count(b"\t") + 1 for ln in f.read().split(b"\n") if ln}
            layout = task.layout(split)
            assert len(counts) == 1, (path, counts)
            if not layout.header:
                assert counts == {layout.columns}, path
