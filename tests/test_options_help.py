"""The options command: every plugin component, every field of its dataclass, its help."""

import dataclasses

import pytest

from fairseq_crild.cli.options_help import format_markdown, format_text, main, plugin_components
from tests.conftest import run_script

EXPECTED = {("task", "distill_glue"), ("criterion", "cr_ild"), ("criterion", "kd"),
            ("criterion", "glue_ce"), ("model", "bert"), ("model", "crild_roberta"),
            ("optimizer", "bert_adam")}


def _registered_dataclass(kind, name):
    from fairseq import criterions, models, optim, tasks

    return {"task": tasks.TASK_DATACLASS_REGISTRY, "criterion":
            criterions.CRITERION_DATACLASS_REGISTRY, "model": models.MODEL_DATACLASS_REGISTRY,
            "optimizer": optim.OPTIMIZER_DATACLASS_REGISTRY}[kind][name]


def test_every_plugin_component_and_only_those():
    found = {(c.kind, c.name) for c in plugin_components()}
    assert found == EXPECTED  # fairseq's own (e.g. adam, sentence_prediction) left out


@pytest.mark.parametrize("kind,name", sorted(EXPECTED))
def test_each_field_is_listed_with_its_help_and_default(kind, name):
    """The listing is the dataclass: one flag per field (fairseq's spelling), same help."""
    (comp,) = plugin_components([kind], [name])
    dc = _registered_dataclass(kind, name)
    by_flag = {o.flag: o for o in comp.options}
    instance = dc()
    for f in dataclasses.fields(dc):
        if f.name.startswith("_"):
            continue
        flag = "data" if f.name == "data" else "--" + f.name.replace("_", "-")
        value = getattr(instance, f.name)
        if isinstance(value, str) and value.startswith("${"):
            continue  # interpolated from another group (e.g. seed: common.seed): no flag
        assert flag in by_flag, f"{name}: {flag} missing"
        help_text = " ".join(str(f.metadata.get("help") or "").split())
        assert by_flag[flag].help == help_text
        if isinstance(value, bool):
            assert by_flag[flag].default == ("off" if not value
                                             else "on (the flag switches it off)")
        elif value == "???":
            assert by_flag[flag].default == "required"
        elif value is not None and not isinstance(value, (list, tuple)):
            assert by_flag[flag].default == str(value)


def test_choices_presets_and_formats():
    (task,) = plugin_components(["task"], ["distill_glue"])
    batches = next(o for o in task.options if o.flag == "--train-batches")
    assert set(batches.choices) == {"auto", "length-buckets", "fresh-pairs"}
    (bert,) = plugin_components(["model"], ["bert"])
    assert {"bert_student", "bert_tiny", "bert_hf_base"} <= set(bert.architectures)
    text = format_text([task, bert])
    assert "== task distill_glue (--task distill_glue)" in text
    assert "--train-batches {auto,length-buckets,fresh-pairs}  (default: auto)" in text
    assert "--arch presets: " in text and "bert_student" in text
    md = format_markdown([task])
    assert "| `--teacher-path` |  | fine-tuned teacher checkpoint" in md


def test_unknown_component_is_refused_with_the_known_names(capsys):
    with pytest.raises(ValueError, match="no plugin component named nope.*cr_ild"):
        plugin_components(names=["nope"])
    assert main(["nope"]) == 2
    assert "cr_ild" in capsys.readouterr().err


def test_script_prints_the_criterion_options():
    out = run_script("scripts/list_options.py", "cr_ild", "kd").stdout
    assert "== criterion cr_ild" in out and "== criterion kd" in out
    assert "--ild-preset" in out and "--temperature" in out and "== task" not in out
