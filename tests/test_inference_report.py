"""The report's inference benchmark: batch-1 latency, batch throughput, threads recorded."""

import torch

from fairseq_crild.pipeline.report import inference_speed, render_markdown
from tests.helpers_export import data_dictionary, save_student


def test_inference_speed_teacher_vs_student(tiny_env, tmp_path):
    torch.set_num_threads(1)
    d = data_dictionary(str(tiny_env["data"]))
    names = ["entailment", "not_entailment"]
    teacher = save_student(str(tmp_path / "t.pt"), d, 2, layers=4, label_names=names)
    student = save_student(str(tmp_path / "s.pt"), d, 2, layers=1, label_names=names)
    inf = inference_speed(str(tiny_env["data"]), {"teacher": teacher, "student": student},
                          max_len=64, n=8, repeats=2, batch_size=4, latency_examples=3)
    assert inf["threads"] == 1 and inf["batch_size"] == 4 and inf["examples"] == 8
    assert inf["latency_examples"] == 3 and inf["device"] == "cpu"
    for name in ("teacher", "student"):
        assert inf[f"{name}_latency_ms"] > 0
        assert inf[f"{name}_latency_ms_p90"] >= inf[f"{name}_latency_ms"]
        assert inf[f"{name}_examples_per_s"] > 0
    assert inf["speedup"] > 0 and inf["latency_speedup"] > 0

    report = {"task": "RTE", "method": "kd", "seed": 1, "budget": "smoke",
              "metric": "accuracy", "metric_names": ["accuracy"], "teacher_dev": 60.0,
              "student_dev": 55.0, "teacher_metrics": {}, "student_metrics": {},
              "params": {"teacher": 2e6, "student": 1e6}, "wall_s": {"stage2": 3.0},
              "inference": inf}
    md = render_markdown(report)
    assert "| latency, batch 1 (median ms, CPU, 1 threads) |" in md
    assert "| throughput, batch 4 (examples/s, CPU, 1 threads) |" in md
    assert f"{inf['latency_speedup']:.2f}x latency (batch 1)" in md


def test_benchmark_script_prints_the_report_fields(tiny_env, tmp_path, capsys):
    import json

    import scripts.benchmark_inference as bench

    d = data_dictionary(str(tiny_env["data"]))
    teacher = save_student(str(tmp_path / "t.pt"), d, 2, layers=2)
    student = save_student(str(tmp_path / "s.pt"), d, 2, layers=1)
    threads = torch.get_num_threads()
    try:
        assert bench.main([str(tiny_env["data"]), "--teacher", teacher, "--student", student,
                           "--threads", "1", "--examples", "4", "--latency-examples", "2",
                           "--batch-size", "2", "--repeats", "1"]) == 0
    finally:
        torch.set_num_threads(threads)
    inf = json.loads(capsys.readouterr().out)
    assert inf["threads"] == 1 and inf["batch_size"] == 2 and inf["latency_speedup"] > 0
