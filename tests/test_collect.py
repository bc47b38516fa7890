"""crild-summarize --collect (fairseq_crild.pipeline.collect): report files copied to a
results folder give the same tables and ILD curves as the run folders they came from."""

import json

import pytest

from fairseq_crild.cli.summarize import main
from fairseq_crild.outputs import OutputExistsError
from fairseq_crild.pipeline import collect as K
from fairseq_crild.pipeline import ild_curves as C
from fairseq_crild.pipeline import summary as S
from tests.test_ild_curves import write_stage1_log
from tests.test_summarize import write_report


@pytest.fixture
def runs(tmp_path):
    out = tmp_path / "runs_out"
    for seed, final in ((1, 60.0), (2, 62.0)):
        write_report(out, "RTE", "kd", seed, final - 1)
        r = write_report(out, "RTE", "l_ild", seed, final)
        write_stage1_log(r.parent, [4.0, 3.0, 2.0 - seed / 10], [4.2, 3.9, 4.0],
                         train=[4.1, 3.1, 2.1])
        (r.parent / "checkpoint_best.pt").write_bytes(b"not copied")
    return out


def _figures(out):
    reports = S.load_reports(str(out), "RTE")
    curves = C.summarize_curves(C.load_run_curves(reports), reports)
    return S.to_markdown(S.summarize(reports)), curves


def test_collected_reports_give_the_same_tables_and_curves_without_logs(runs, tmp_path):
    dest = tmp_path / "results"
    written = K.collect_reports(S.load_reports(str(runs), "RTE"), str(runs), str(dest))
    assert len(written) == 4
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()) == [
        f"runs/RTE/{m}/seed{s}/report.json" for m in ("kd", "l_ild") for s in (1, 2)]
    kept = json.loads((dest / "runs/RTE/l_ild/seed2/report.json").read_text())
    assert "_file" not in kept
    assert kept[C.REPORT_FIELD]["train_probe"] == [[10.0, 4.0], [20.0, 3.0], [30.0, 1.8]]
    assert _figures(dest) == _figures(runs)


def test_collecting_again_skips_equal_copies_and_refuses_a_changed_run(runs, tmp_path):
    dest = tmp_path / "results"
    assert main([str(runs), "--task", "RTE", "--collect", str(dest)]) == 0
    assert K.collect_reports(S.load_reports(str(runs), "RTE"), str(runs), str(dest)) == []
    before = {p: p.read_text() for p in dest.rglob("report.json")}
    changed = runs / "runs/RTE/kd/seed2/report.json"  # the run was redone
    report = json.loads(changed.read_text())
    changed.write_text(json.dumps({**report, "student_dev": 70.0}))
    write_report(runs, "RTE", "kd", 3, 50.0)  # a new run, not written either: all or nothing
    with pytest.raises(OutputExistsError, match="kd/seed2/report.json already exists and "
                       "differs"):
        K.collect_reports(S.load_reports(str(runs), "RTE"), str(runs), str(dest))
    assert {p: p.read_text() for p in dest.rglob("report.json")} == before
