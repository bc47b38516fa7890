"""crild-supplementary: other GLUE tasks' text as PAIRS folders for --ild-data, read back by
the same reader the task uses."""

import pytest

from fairseq_crild.cli import supplementary as cli
from fairseq_crild.data.glue_tasks import get_task, read_split
from fairseq_crild.data.supplementary import parse_sources, supplementary_rows

RTE_TRAIN = ("index\tsentence1\tsentence2\tlabel\n"
             "0\tA man sleeps.\tA man rests.\tentailment\n"
             "1\tThe sun is hot.\tIce is cold.\tnot_entailment\n"
             "2\tA man sleeps.\tA man rests.\tentailment\n")  # a duplicate pair
RTE_TEST = "index\tsentence1\tsentence2\n0\tBirds fly south.\tA man rests.\n"
COLA_TRAIN = "gj04\t1\t\tThe cat sat.\ngj04\t0\t*\tCat the sat.\n"


@pytest.fixture()
def glue(tmp_path):
    (tmp_path / "RTE").mkdir()
    (tmp_path / "RTE" / "train.tsv").write_text(RTE_TRAIN, encoding="utf-8")
    (tmp_path / "RTE" / "test.tsv").write_text(RTE_TEST, encoding="utf-8")
    (tmp_path / "CoLA").mkdir()
    (tmp_path / "CoLA" / "train.tsv").write_text(COLA_TRAIN, encoding="utf-8")
    return tmp_path


def test_pairs_in_source_order_without_duplicates(glue):
    rows = supplementary_rows(str(glue), parse_sources("RTE,RTE:test"), single=False)
    assert rows == [("A man sleeps.", "A man rests."), ("The sun is hot.", "Ice is cold."),
                    ("Birds fly south.", "A man rests.")]


def test_single_sentences_from_pairs_and_from_a_single_sentence_task(glue):
    rows = supplementary_rows(str(glue), parse_sources("RTE:test,CoLA"), single=True)
    assert rows == [("Birds fly south.",), ("A man rests.",), ("The cat sat.",),
                    ("Cat the sat.",)]
    with pytest.raises(ValueError, match="CoLA has single sentences; pass --single"):
        supplementary_rows(str(glue), parse_sources("CoLA"), single=False)


def test_the_target_task_and_unknown_splits_are_refused(glue):
    with pytest.raises(ValueError, match="that is the target task RTE"):
        supplementary_rows(str(glue), parse_sources("RTE"), single=False, target="rte")
    with pytest.raises(ValueError, match="--from RTE:validation: RTE has splits"):
        parse_sources("RTE:validation")


def test_the_folder_reads_back_as_pairs_and_is_never_overwritten(glue, tmp_path, capsys):
    out = tmp_path / "supp"
    assert cli.main(["--glue-dir", str(glue), "--from", "RTE,RTE:test", "--target",
                     "STS-B", "--out", str(out)]) == 0
    back = read_split(str(out), get_task("PAIRS"), "train")
    assert [(e.text_a, e.text_b) for e in back][-1] == ("Birds fly south.", "A man rests.")
    assert len(back) == 3
    before = (out / "train.tsv").read_bytes()
    assert cli.main(["--glue-dir", str(glue), "--from", "CoLA", "--single", "--out",
                     str(out)]) == 1
    assert "already exists and is not empty; pass --overwrite" in capsys.readouterr().err
    assert (out / "train.tsv").read_bytes() == before
    assert cli.main(["--glue-dir", str(glue), "--from", "CoLA", "--single", "--out",
                     str(out), "--overwrite"]) == 0
    back = read_split(str(out), get_task("PAIRS"), "train")
    assert [(e.text_a, e.text_b) for e in back] == [("The cat sat.", None),
                                                    ("Cat the sat.", None)]


def test_a_missing_task_folder_names_the_file(glue, tmp_path, capsys):
    assert cli.main(["--glue-dir", str(glue), "--from", "STS-B", "--out",
                     str(tmp_path / "o")]) == 1
    assert "STS-B" in capsys.readouterr().err and not (tmp_path / "o").exists()
