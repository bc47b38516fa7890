"""README tables re-derived from report files: marker parsing, rewriting only the block
bodies, errors that name file and line, the CLI's --check, and the repository's own README
being in step with its committed results/."""

import os

import pytest

from fairseq_crild.cli.summarize import main
from fairseq_crild.pipeline import readme_blocks as R
from fairseq_crild.pipeline import summary as S
from tests.test_summarize import write_report

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OPEN = "<!-- crild-summarize out=out task=RTE -->"


def doc(body="stale"):
    return f"# Results\n\nintro\n\n{OPEN}\n{body}\n{R.CLOSE}\n\nafter\n"


def test_refresh_replaces_only_the_body_and_reports_changes():
    seen = []

    def render(spec):
        seen.append(spec)
        return "| a |\n|---|"

    new, changed = R.refresh(doc(), "README.md", render)
    assert new == doc("| a |\n|---|")
    assert changed == [R.BlockSpec(out="out", task="RTE")] == seen
    again, changed = R.refresh(new, "README.md", render)
    assert again == new and changed == []


def test_spec_keys_and_defaults():
    spec = R.parse_spec("out=results/claims task=CoLA setting=few_sample baseline=l_ild "
                        "part=variants", "f:1")
    assert spec == R.BlockSpec("results/claims", "CoLA", "few_sample", "l_ild", "variants")
    assert R.parse_spec("task=RTE out=x", "f:1") == R.BlockSpec("x", "RTE")


@pytest.mark.parametrize("text, message", [
    (f"{OPEN}\nx\n", "README.md:1: block never closed"),
    (f"x\n{R.CLOSE}\n", "README.md:2: <!-- /crild-summarize --> without an opening"),
    (f"{OPEN}\n{OPEN}\n{R.CLOSE}\n", "README.md:2: a block opens inside the block opened on"),
    ("<!-- crild-summarize out=x -->\n" + R.CLOSE, "README.md:1: marker lacks task="),
    ("<!-- crild-summarize out=x task=RTE seed=3 -->\n" + R.CLOSE, "unknown marker key 'seed'"),
    ("<!-- crild-summarize out=x task=RTE part=plot -->\n" + R.CLOSE, "part=plot is not one"),
    ("<!-- crild-summarize out=x task -->\n" + R.CLOSE, "item 'task' is not key=value"),
    ("no markers\n", "no <!-- crild-summarize ... --> block"),
])
def test_bad_markers_name_file_and_line(text, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("...", r"\.\.\.")):
        R.refresh(text, "README.md", lambda spec: "")


def test_blocks_render_the_summary_tables(tmp_path):
    out = tmp_path / "out"
    for seed, (kd, l_ild, supp) in enumerate([(60.0, 58.0, 61.0), (62.0, 57.5, 60.0),
                                              (61.0, 59.0, 62.5)], start=1):
        write_report(out, "RTE", "kd", seed, kd, setting="few_sample")
        write_report(out, "RTE", "l_ild", seed, l_ild, setting="few_sample")
        write_report(out, "RTE", "l_ild+ild-data=X", seed, supp, setting="few_sample")
    text = (f"{OPEN.replace('task=RTE', 'task=RTE setting=few_sample')}\n{R.CLOSE}\n"
            "<!-- crild-summarize out=out task=RTE setting=few_sample part=variants -->\n"
            f"{R.CLOSE}\n")
    new, changed = R.refresh(text, "README.md", R.default_render(str(tmp_path)))
    expected = S.summarize(S.load_reports(str(out), "RTE", "few_sample"))
    table = S.task_markdown(expected, "RTE", "table")
    variants = S.task_markdown(expected, "RTE", "variants")
    assert "| l_ild+ild-data=X | l_ild | +3.00 [" in variants  # (3 + 2.5 + 3.5) / 3
    assert new == f"{OPEN.replace('task=RTE', 'task=RTE setting=few_sample')}\n{table}\n" \
                  f"{R.CLOSE}\n<!-- crild-summarize out=out task=RTE setting=few_sample " \
                  f"part=variants -->\n{variants}\n{R.CLOSE}\n"
    assert len(changed) == 2


def test_teacher_path_is_shown_from_runs_on():
    assert S._short_path("/work/main/runs/claims/teachers/t/checkpoint_best.pt") == \
        "runs/claims/teachers/t/checkpoint_best.pt"
    assert S._short_path("/teachers/RTE/checkpoint_best.pt") == "/teachers/RTE/checkpoint_best.pt"


def test_cli_check_then_rewrite(tmp_path, capsys):
    write_report(tmp_path / "out", "RTE", "kd", 1, 60.0)
    readme = tmp_path / "README.md"
    readme.write_text(doc())
    assert main(["--readme", str(readme), "--check"]) == 1
    assert "stale table of RTE" in capsys.readouterr().err
    assert readme.read_text() == doc()  # --check changes nothing
    assert main(["--readme", str(readme)]) == 0
    assert "| kd | 1 | 60.00 ± 0.00 |" in readme.read_text()
    assert main(["--readme", str(readme), "--check"]) == 0


def test_cli_error_leaves_the_file_as_it_was(tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text(doc())  # out/ has no reports
    assert main(["--readme", str(readme)]) == 1
    err = capsys.readouterr().err
    assert f"{readme}:5: " in err and "out is not a folder" in err
    assert readme.read_text() == doc() and sorted(os.listdir(tmp_path)) == ["README.md"]


def test_cli_needs_a_folder_or_readme(capsys):
    with pytest.raises(SystemExit):
        main([])
    assert "--readme PATH" in capsys.readouterr().err


def test_repository_readme_matches_committed_results():
    """Every marked README table re-derives from results/ unchanged: a committed report
    without its README refresh (or a hand edit of a table) fails here."""
    changed = R.refresh_file(os.path.join(REPO, "README.md"), check=True)
    assert changed == [], ("README tables are stale; run "
                           "`crild-summarize --readme README.md` and commit: "
                           + ", ".join(f"{c.task} {c.setting} {c.part}" for c in changed))
