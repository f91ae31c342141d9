"""The task-type registry and ``tasks.<name>.type``: every type complete and tested, the old boolean
keys still read (with one note), unknown names refused naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

import twilbert.config
from twilbert.config import ConfigError, from_dict
from twilbert.finetune.config import TaskConfig
from twilbert.finetune.task_types import TASK_TYPES, ClassificationType, TaskType, get_task_type

TESTS = Path(__file__).parent / "task_types"
FILES = dict(train_file="a", dev_file="b", test_file="c")
# what every type must implement itself (TaskType's versions raise NotImplementedError)
REQUIRED = ("check_labels", "check_selection", "n_outputs", "read_labels", "loss", "probabilities", "predictions", "metrics",
            "selection_metric", "label_text", "plot", "baseline_grid", "baseline_fit", "predict_rows")


def test_the_three_types_are_registered():
    assert {"single_label", "multi_label", "regression"} <= set(TASK_TYPES)
    assert get_task_type("regression").name == "regression"
    with pytest.raises(ValueError, match=r"unknown task type 'no_such_type'; known: \[.*'regression'"):
        get_task_type("no_such_type")


@pytest.mark.parametrize("name", sorted(TASK_TYPES))
def test_every_registered_type_has_its_test_module(name):
    assert (TESTS / f"test_{name}.py").is_file(), f"task type {name!r}: add tests/finetune/task_types/test_{name}.py"


@pytest.mark.parametrize("name", sorted(TASK_TYPES))
def test_every_registered_type_implements_the_protocol(name):
    cls = type(get_task_type(name))
    missing = [m for m in REQUIRED if getattr(cls, m) is getattr(TaskType, m)]
    assert not missing, f"task type {name!r} does not implement {missing}"
    if issubclass(cls, ClassificationType):
        assert cls.label_counts is not ClassificationType.label_counts
    assert cls.losses and cls.baseline_model and cls.name == name


def test_type_defaults_to_single_label_and_unknown_names_the_key():
    assert TaskConfig(**FILES, categories={"a": 0, "b": 1}).kind is get_task_type("single_label")
    with pytest.raises(ConfigError, match=r"^tasks\.t\.type: unknown task type 'no_such_type'; known: \[.*'multi_label', 'regression', 'single_label'"):
        from_dict(TaskConfig, {**FILES, "type": "no_such_type", "categories": {"a": 0, "b": 1}}, "tasks.t")


def test_old_boolean_keys_load_as_type_with_one_note_each(monkeypatch, capsys):
    monkeypatch.setattr(twilbert.config, "_NOTED", set())
    old = {**FILES, "regression": True, "eval_metric": "pearson"}
    for _ in range(2):  # the note is printed once per key and process
        task = from_dict(TaskConfig, dict(old), "tasks.r")
        assert task.type == "regression" and task.n_outputs == 1
    assert capsys.readouterr().err == "note: tasks.r.regression is deprecated; write tasks.r.type: regression instead\n"

    multi = from_dict(TaskConfig, {**FILES, "multi_label": True, "regression": False, "categories": {"a": 0}}, "tasks.m")
    assert multi.type == "multi_label"
    err = capsys.readouterr().err.splitlines()
    assert err == ["note: tasks.m.regression is deprecated; write tasks.m.type: multi_label instead",
                   "note: tasks.m.multi_label is deprecated; write tasks.m.type: multi_label instead"]
    assert from_dict(TaskConfig, {**FILES, "multi_label": False, "categories": {"a": 0, "b": 1}}, "tasks.s").type == "single_label"
    # the old key agreeing with the new one is accepted too
    assert from_dict(TaskConfig, {**old, "type": "regression"}, "tasks.r").type == "regression"


def test_old_boolean_keys_that_contradict_are_errors_naming_the_key():
    with pytest.raises(ConfigError, match=r"^tasks\.t\.multi_label: a regression task cannot be multi-label"):
        from_dict(TaskConfig, {**FILES, "regression": True, "multi_label": True}, "tasks.t")
    with pytest.raises(ConfigError, match=r"^tasks\.t\.type: 'single_label' contradicts the deprecated tasks\.t\.regression: true"):
        from_dict(TaskConfig, {**FILES, "regression": True, "type": "single_label"}, "tasks.t")
    with pytest.raises(ConfigError, match=r"^tasks\.t\.regression: expected true/false, got str 'yes'"):
        from_dict(TaskConfig, {**FILES, "regression": "yes"}, "tasks.t")


def test_a_loss_that_does_not_fit_the_type_names_the_types_losses():
    from twilbert.finetune.config import FinetuningConfig, effective_finetuning

    task = TaskConfig(**FILES, type="regression", eval_metric="pearson")
    with pytest.raises(ConfigError, match=r"finetuning\.loss: 'cross_entropy' does not fit task 't' \(regression\); use one of \['mse'\]"):
        effective_finetuning(FinetuningConfig(), task, "t")
