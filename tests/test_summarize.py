"""crild-summarize and fairseq_crild.pipeline.summary on small synthetic report.json trees:
the statistics against hand computations, pairing by seed, one teacher per table, and the
files it writes."""

import json
import math
import os
import re
import statistics

import pytest
from scipy import stats

from fairseq_crild.cli.summarize import main
from fairseq_crild.pipeline import summary as S

TEACHER = "/teachers/RTE/checkpoint_best.pt"
SCORES = {  # method -> seed -> dev accuracy
    "kd": {1: 60.0, 2: 62.5, 3: 61.0, 4: 59.5},
    "cr_ild": {1: 63.0, 2: 64.0, 3: 61.5, 4: 62.0},
    "pkd": {1: 61.0, 2: 61.0, 4: 60.0},  # no seed 3: paired over seeds 1, 2, 4 only
    "finetune": {2: 58.0},
}


def write_report(out, task, method, seed, student, teacher_dev=66.0, teacher=TEACHER,
                 setting="full", metric="accuracy", wall=None):
    folder = task if setting == "full" else f"{task}-{setting}"
    d = out / "runs" / folder / method / f"seed{seed}"
    d.mkdir(parents=True)
    report = {"task": task, "method": method, "seed": seed, "budget": "table",
              "setting": setting, "metric": metric, "teacher_dev": teacher_dev,
              "student_dev": student, "teacher_checkpoint": teacher,
              "wall_s": wall or {"teacher": 1000.0, "stage1": 10.0 * seed, "stage2": 5.0}}
    (d / "report.json").write_text(json.dumps(report))
    return d / "report.json"


@pytest.fixture
def tree(tmp_path):
    out = tmp_path / "out"
    for method, by_seed in SCORES.items():
        for seed, score in by_seed.items():
            write_report(out, "RTE", method, seed, score)
    return out


def hand_paired_t(diffs, confidence=0.95):
    n = len(diffs)
    mean, sd = statistics.mean(diffs), statistics.stdev(diffs)
    half = stats.t.ppf(0.5 + confidence / 2, n - 1) * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def test_mean_std_ratio_wall_and_order(tree):
    s = S.summarize(S.load_reports(str(tree)))
    t = s["tasks"]["RTE"]
    assert t["metric"] == "accuracy" and t["teacher_dev"] == 66.0
    assert t["teacher_checkpoint"] == TEACHER and t["n_seeds"] == 4
    assert list(t["methods"]) == ["finetune", "kd", "pkd", "cr_ild"]
    kd = t["methods"]["kd"]
    assert kd["seeds"] == [1, 2, 3, 4] and kd["scores"] == [60.0, 62.5, 61.0, 59.5]
    assert kd["mean"] == pytest.approx(sum(kd["scores"]) / 4)
    m = sum(kd["scores"]) / 4
    assert kd["std"] == pytest.approx(math.sqrt(sum((x - m) ** 2 for x in kd["scores"]) / 3))
    assert kd["ratio_to_teacher"] == pytest.approx(m / 66.0)
    assert kd["wall_s"] == pytest.approx(sum(10.0 * s + 5.0 for s in (1, 2, 3, 4)) / 4)
    assert "diff_mean" not in kd  # the baseline is not compared with itself
    ft = t["methods"]["finetune"]
    assert ft["std"] == 0.0 and ft["n_pairs"] == 1 and ft["diff_mean"] == pytest.approx(-4.5)
    assert ft["diff_ci_low"] is None and ft["boot_low"] is None


def test_paired_t_interval_by_hand_and_pairing_by_seed(tree):
    methods = S.summarize(S.load_reports(str(tree)))["tasks"]["RTE"]["methods"]
    for name, seeds in (("cr_ild", [1, 2, 3, 4]), ("pkd", [1, 2, 4])):
        row = methods[name]
        diffs = [SCORES[name][s] - SCORES["kd"][s] for s in seeds]
        mean, low, high = hand_paired_t(diffs)
        assert row["paired_seeds"] == seeds and row["n_pairs"] == len(seeds)
        assert row["diff_mean"] == pytest.approx(mean)
        assert (row["diff_ci_low"], row["diff_ci_high"]) == (pytest.approx(low),
                                                              pytest.approx(high))
        # percentile bootstrap of the same differences: inside their range, around the mean
        assert min(diffs) <= row["boot_low"] <= mean <= row["boot_high"] <= max(diffs)
    # pkd's mean uses its own 3 seeds; unpaired (mean - mean) would differ from diff_mean
    pkd = methods["pkd"]
    assert pkd["mean"] - methods["kd"]["mean"] != pytest.approx(pkd["diff_mean"])


def test_no_bootstrap_interval_from_two_pairs():
    two = S.paired_difference([1.0, 2.0], [0.5, 0.5])
    assert two["diff_ci_low"] is not None and two["boot_low"] is None
    three = S.paired_difference([1.0, 2.0, 4.0], [0.5, 0.5, 0.5])
    assert three["boot_low"] is not None


def test_bootstrap_is_reproducible_and_confidence_widens(tree):
    reports = S.load_reports(str(tree))
    a = S.summarize(reports)["tasks"]["RTE"]["methods"]["cr_ild"]
    b = S.summarize(reports)["tasks"]["RTE"]["methods"]["cr_ild"]
    assert (a["boot_low"], a["boot_high"]) == (b["boot_low"], b["boot_high"])
    wide = S.summarize(reports, confidence=0.99)["tasks"]["RTE"]["methods"]["cr_ild"]
    assert wide["diff_ci_low"] < a["diff_ci_low"] and wide["diff_ci_high"] > a["diff_ci_high"]


def test_two_teachers_in_one_task_raise(tree):
    write_report(tree, "RTE", "minilm", 1, 60.0, teacher_dev=70.0)
    with pytest.raises(ValueError, match=r"two teachers.*66\.0.*70\.0"):
        S.summarize(S.load_reports(str(tree)))
    (tree / "runs" / "RTE" / "minilm" / "seed1" / "report.json").unlink()
    write_report(tree, "RTE", "minilm", 2, 60.0, teacher="/other/checkpoint_best.pt")
    with pytest.raises(ValueError, match="two teachers.*/other/checkpoint_best.pt"):
        S.summarize(S.load_reports(str(tree)))


def test_other_settings_one_teacher_per_seed_kept_apart(tmp_path):
    out = tmp_path / "out"
    write_report(out, "RTE", "kd", 1, 60.0)  # a full run: not part of the few_sample table
    for seed, teacher in ((1, 50.0), (2, 54.0)):
        for method, score in (("kd", 45.0 + seed), ("cr_ild", 46.0 + 2 * seed)):
            write_report(out, "RTE", method, seed, score, teacher_dev=teacher,
                         teacher=f"/t/seed{seed}.pt", setting="few_sample")
    assert [r["setting"] for r in S.load_reports(str(out))] == ["full"]
    s = S.summarize(S.load_reports(str(out), setting="few_sample"))
    t = s["tasks"]["RTE"]
    assert t["setting"] == "few_sample" and t["teacher_dev"] == 52.0
    assert [x["seed"] for x in t["teacher_per_seed"]] == [1, 2]
    assert t["methods"]["cr_ild"]["diff_mean"] == pytest.approx(2.5)
    write_report(out, "RTE", "pkd", 1, 40.0, teacher_dev=51.0, setting="few_sample")
    with pytest.raises(ValueError, match="seed 1: two teachers"):
        S.summarize(S.load_reports(str(out), setting="few_sample"))


def test_load_errors_name_the_folder_or_file(tmp_path, tree):
    with pytest.raises(ValueError, match=re.escape(str(tmp_path / "empty"))):
        S.load_reports(str(tmp_path / "empty"))
    bad = write_report(tree, "RTE", "tinybert", 1, 60.0)
    bad.write_text("{not json")
    with pytest.raises(ValueError, match=re.escape(f"{bad}: malformed")):
        S.load_reports(str(tree))
    bad.write_text(json.dumps({"task": "RTE", "method": "tinybert", "seed": 1}))
    with pytest.raises(ValueError, match=re.escape(f"{bad}: malformed report, missing metric")):
        S.load_reports(str(tree))


def test_markdown_has_one_row_per_method(tree):
    md = S.to_markdown(S.summarize(S.load_reports(str(tree))))
    assert "dev accuracy, teacher 66.00" in md and "4 seeds" in md and "paired by seed" in md
    assert "| method | seeds | mean ± std | per seed | student/teacher | Δ vs kd [95% CI]" in md
    rows = [line for line in md.splitlines() if line.startswith("| ") and "---" not in line]
    assert [r.split(" | ")[0][2:] for r in rows[1:]] == ["finetune", "kd", "pkd", "cr_ild"]
    kd = next(r for r in rows if r.startswith("| kd |"))
    assert "60.75 ± 1.32" in kd and "1: 60.00, 2: 62.50, 3: 61.00, 4: 59.50" in kd
    assert "(baseline)" in kd and "92.0%" in kd
    pkd = next(r for r in rows if r.startswith("| pkd |"))
    assert "(n=3)" in pkd


def test_plot_writes_one_png_per_task(tree, tmp_path):
    write_report(tree, "STS-B", "kd", 1, 80.0, teacher_dev=88.0, metric="pearson")
    paths = S.plot(S.summarize(S.load_reports(str(tree))), str(tmp_path / "plots"))
    assert paths == [str(tmp_path / "plots" / "RTE.png"), str(tmp_path / "plots" / "STS-B.png")]
    for p in paths:
        with open(p, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert sorted(os.listdir(tmp_path / "plots")) == ["RTE.png", "STS-B.png"]  # no temporaries


def test_json_round_trip_and_directory_refused(tree, tmp_path):
    s = S.summarize(S.load_reports(str(tree)))
    path = tmp_path / "summary.json"
    S.write_json(s, str(path))
    assert json.loads(path.read_text()) == s
    assert "_file" not in path.read_text()
    S.write_json(s, str(path))  # a rerun replaces it
    with pytest.raises(OSError, match="directory"):
        S.write_json(s, str(tmp_path))


def test_cli_prints_table_and_writes_files(tree, tmp_path, capsys):
    js, plots = tmp_path / "s.json", tmp_path / "figs"
    assert main([str(tree), "--task", "RTE", "--json", str(js), "--plots", str(plots)]) == 0
    out = capsys.readouterr().out
    assert "| cr_ild | 4 |" in out
    assert json.loads(js.read_text())["tasks"]["RTE"]["methods"]["kd"]["seeds"] == [1, 2, 3, 4]
    assert (plots / "RTE.png").is_file()


def test_cli_error_is_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty")]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("crild-summarize: error: ")
    assert str(tmp_path / "empty") in lines[0]


def test_a_variant_is_also_paired_with_its_own_method(tree):
    """``cr_ild+ild-data=P`` against kd (the table) and against cr_ild (its own table), each
    paired over the seeds the two share, by hand."""
    variant = {1: 64.5, 2: 63.0, 4: 65.0}
    for seed, score in variant.items():
        write_report(tree, "RTE", "cr_ild+ild-data=P", seed, score)
    s = S.summarize(S.load_reports(str(tree)))
    row = s["tasks"]["RTE"]["methods"]["cr_ild+ild-data=P"]
    for against, vs in (("kd", row), ("cr_ild", row["vs_own_method"])):
        diffs = [variant[k] - SCORES[against][k] for k in (1, 2, 4)]
        mean, low, high = hand_paired_t(diffs)
        assert vs["paired_seeds"] == [1, 2, 4] and vs["diff_mean"] == pytest.approx(mean)
        assert (vs["diff_ci_low"], vs["diff_ci_high"]) == (pytest.approx(low),
                                                          pytest.approx(high))
    assert row["vs_own_method"]["method"] == "cr_ild"
    assert "vs_own_method" not in s["tasks"]["RTE"]["methods"]["cr_ild"]
    md = S.to_markdown(s)
    line = next(r for r in md.splitlines() if r.startswith("| cr_ild+ild-data=P | cr_ild |"))
    assert f"{row['vs_own_method']['diff_mean']:+.2f}" in line and "(n=3)" in line
    assert "Each variant against its own method" in md
    assert "Each variant" not in S.to_markdown(S.summarize(S.load_reports(str(tree)),
                                                           baseline="cr_ild"))


def test_variants_follow_their_own_method():
    assert S.method_order(["zeta", "kd+kd-data=Q", "cr_ild+x", "kd", "l_ild+a", "l_ild",
                           "alpha+b", "alpha", "finetune"]) == [
        "finetune", "kd", "kd+kd-data=Q", "l_ild", "l_ild+a", "cr_ild+x", "alpha", "alpha+b",
        "zeta"]
