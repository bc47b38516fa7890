"""The overfitting curves (fairseq_crild.pipeline.ild_curves) from synthetic stage-1 logs in
fairseq's json format: parsing, per-seed figures against hand computations, the plot."""

import json

import pytest

from fairseq_crild.cli.summarize import main
from fairseq_crild.pipeline import ild_curves as C
from fairseq_crild.pipeline import summary as S
from tests.test_summarize import write_report


def _line(kind, update, **values):
    prefix = "" if kind == "train_inner" else f"{kind}_"  # as fairseq's json log prints them
    rec = {f"{prefix}{k}": v for k, v in values.items()}
    rec[f"{prefix}num_updates"] = str(update)  # fairseq's json log writes strings
    return f"2026-12-01 10:00:00 | INFO | {kind} | {json.dumps(rec)}\n"


def write_stage1_log(run_dir, probe, dev, train=None):
    """A stage-1 train.log with train_probe / valid records at updates 10, 20, ..."""
    lines = ["2026-12-01 10:00:00 | INFO | fairseq_cli.train | start\n"]
    for i, (p, d) in enumerate(zip(probe, dev)):
        update = 10 * (i + 1)
        if train:
            lines.append(_line("train_inner", update, loss=str(train[i]),
                               loss_ild=str(train[i])))
        lines.append(_line("valid", update, loss=str(d), loss_ild=str(d)))
        lines.append(_line("train_probe", update, loss=str(p), loss_ild=str(p)))
    (run_dir / "stage1").mkdir()
    (run_dir / "stage1" / "train.log").write_text("".join(lines))


def test_curves_are_read_per_kind_and_a_repeated_update_keeps_the_last(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    write_stage1_log(run, [3.0, 2.0], [3.5, 3.4], train=[3.2, 2.1])
    log = run / "stage1" / "train.log"
    with open(log, "a") as f:  # fairseq's epoch-end evaluation at the same update
        f.write(_line("valid", 20, loss="3.3", loss_ild="3.3"))
    curves = C.stage1_curves(str(log))
    assert curves["train_probe"] == [(10.0, 3.0), (20.0, 2.0)]
    assert curves["valid"] == [(10.0, 3.5), (20.0, 3.3)]
    assert curves["train_inner"] == [(10.0, 3.2), (20.0, 2.1)]
    assert C.stage1_curves(str(tmp_path / "missing.log")) == {}


@pytest.fixture
def tree(tmp_path):
    out = tmp_path / "out"
    # tinybert: training loss keeps falling, dev loss turns up after its minimum
    for seed, final in ((1, 60.0), (2, 62.0)):
        r = write_report(out, "RTE", "tinybert", seed, final)
        write_stage1_log(r.parent, [4.0, 3.0, 2.0, 1.0 + seed / 10], [4.2, 3.8, 3.9, 4.1])
    r = write_report(out, "RTE", "cr_ild", 1, 63.0)
    write_stage1_log(r.parent, [4.0, 3.5, 3.2, 3.0], [4.1, 3.7, 3.5, 3.4])
    write_report(out, "RTE", "kd", 1, 61.0)  # no stage 1: left out
    r = write_report(out, "RTE", "l_ild", 1, 61.5)
    (r.parent / "stage1").mkdir()  # a stage 1 run without probes: left out
    (r.parent / "stage1" / "train.log").write_text(_line("train_inner", 10, loss_ild="2"))
    return out


def test_summary_per_seed_and_mean_against_hand_values(tree):
    reports = S.load_reports(str(tree), "RTE")
    result = C.summarize_curves(C.load_run_curves(reports), reports)
    assert list(result["methods"]) == ["tinybert", "cr_ild"]  # the tables' method order
    t1 = result["methods"]["tinybert"]["seeds"][1]
    assert t1["train_change"] == pytest.approx(1.1 - 4.0)
    assert t1["dev_change"] == pytest.approx(4.1 - 4.2)
    assert (t1["dev_min"], t1["dev_min_update"]) == (3.8, 20.0)
    assert t1["dev_rise_after_min"] == pytest.approx(4.1 - 3.8)
    assert t1["last_gap"] == pytest.approx(4.1 - 1.1)
    assert t1["final_dev_metric"] == 60.0
    mean = result["methods"]["tinybert"]["mean"]
    assert mean["train_change"] == pytest.approx(((1.1 - 4.0) + (1.2 - 4.0)) / 2)
    assert mean["final_dev_metric"] == 61.0
    cr = result["methods"]["cr_ild"]["seeds"][1]
    assert cr["dev_rise_after_min"] == 0.0 and cr["dev_min_update"] == cr["last_update"]


def test_curves_stored_in_the_report_stand_in_for_a_missing_log(tree):
    """results/ keeps report.json files without logs: a report's own copy of its curves
    (written by the pipeline) gives the same figures as the log it came from."""
    logged = S.load_reports(str(tree), "RTE")
    from_logs = C.summarize_curves(C.load_run_curves(logged), logged)
    for path in sorted(tree.glob("runs/RTE/*/seed*/report.json")):
        log = path.parent / "stage1" / "train.log"
        if log.exists():
            report = json.loads(path.read_text())
            report[C.REPORT_FIELD] = C.stage1_curves(str(log))
            path.write_text(json.dumps(report))
            log.unlink()
    reports = S.load_reports(str(tree), "RTE")
    from_reports = C.summarize_curves(C.load_run_curves(reports), reports)
    assert list(from_reports["methods"]) == ["tinybert", "cr_ild"]
    for method in ("tinybert", "cr_ild"):
        assert from_reports["methods"][method]["seeds"] == from_logs["methods"][method]["seeds"]
        assert from_reports["methods"][method]["curves"] == from_logs["methods"][method]["curves"]


def test_summarize_command_writes_curve_json_and_plot(tree, tmp_path, capsys):
    figs = tmp_path / "figs"
    assert main([str(tree), "--task", "RTE", "--ild-curves", str(figs)]) == 0
    data = json.loads((figs / "ild_curves-RTE.json").read_text())
    assert sorted(data["methods"]) == ["cr_ild", "tinybert"]
    assert (figs / "ild_curves-RTE.png").read_bytes()[:4] == b"\x89PNG"
    empty = tmp_path / "empty"
    write_report(empty, "RTE", "kd", 1, 61.0)
    assert main([str(empty), "--task", "RTE", "--ild-curves", str(figs)]) == 1
    assert "--ild-probe-every" in capsys.readouterr().err
