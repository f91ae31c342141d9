"""CONTRIBUTING.md "Where new things go", enforced (in the spirit of torchtitan's
``test_no_new_cli_options.py``): every registered component has its test, every normalisation rule
shows in the golden rows, and the CLI's commands and options are frozen -- a new experiment is a
params key (tracked by DVC and MLflow), not a flag."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# registry (module, attribute) -> the test module that must exercise every name in it
REGISTRIES = {
    ("twilbert.train.optim", "OPTIMIZERS"): "tests/train/test_train_optim.py",
    ("twilbert.train.schedules", "SCHEDULES"): "tests/train/test_train_schedules.py",
    ("twilbert.model.attention", "ATTENTION_BACKENDS"): "tests/model/test_model_equivalence.py",
    ("twilbert.finetune.config", "LOSSES"): "tests/finetune/test_finetune_losses.py",
}


def _cases():
    for (module, attr), test in REGISTRIES.items():
        for name in getattr(importlib.import_module(module), attr):
            yield pytest.param(name, test, id=f"{attr}:{name}")


@pytest.mark.parametrize("name, test", list(_cases()))
def test_every_registered_name_is_tested(name, test):
    assert f'"{name}"' in (REPO / test).read_text(), f"{name!r} is registered but {test} never names it: add a test case"


@pytest.mark.parametrize("config, field, registry", [
    ("twilbert.train.config.TrainingConfig", "optimizer", "twilbert.train.optim.OPTIMIZERS"),
    ("twilbert.finetune.config.FinetuningConfig", "optimizer", "twilbert.train.optim.OPTIMIZERS"),
    ("twilbert.train.config.TrainingConfig", "schedule", "twilbert.train.schedules.SCHEDULES"),
    ("twilbert.finetune.config.FinetuningConfig", "schedule", "twilbert.train.schedules.SCHEDULES"),
    ("twilbert.train.config.ImplConfig", "attention", "twilbert.model.attention.ATTENTION_BACKENDS"),
])
def test_config_choices_follow_the_registries(config, field, registry):
    """A registered name is a valid params value, and a params value is registered."""
    import typing

    def load(dotted):
        module, attr = dotted.rsplit(".", 1)
        return getattr(importlib.import_module(module), attr)

    choices = typing.get_args(typing.get_type_hints(load(config))[field])
    assert sorted(choices) == sorted(load(registry)), f"{config}.{field}: {choices} vs {registry}"


def test_every_objective_has_a_test_module():
    from twilbert.train.objectives import OBJECTIVES

    missing = [n for n in OBJECTIVES if not (REPO / f"tests/train/test_objective_{n}.py").is_file()]
    assert not missing, f"add tests/train/test_objective_<name>.py for {missing}"


def test_every_task_type_has_a_test_module():
    from twilbert.finetune.task_types import TASK_TYPES

    missing = [n for n in TASK_TYPES if not (REPO / f"tests/finetune/task_types/test_{n}.py").is_file()]
    assert not missing, f"add tests/finetune/task_types/test_<name>.py for {missing}"


# Rules the golden rows of the default preset cannot show, each with where it is tested instead.
NOT_IN_GOLDEN_SWITCHES = {
    "char_table": "off in the default preset: tests/text/test_presets_pysentimiento.py",
    "whitespace": "runs on every text (collapse/strip): tests/text/test_normalize.py whitespace cases",
}


def test_every_normalize_rule_has_golden_rows():
    """``RELEVANT`` in tests/text/test_normalize.py switches each rule off over the golden tweets and
    asserts some golden row changes: a rule missing there has no golden row that shows it."""
    from twilbert.text.normalize import TABLE

    source = (REPO / "tests/text/test_normalize.py").read_text()
    relevant = set(re.findall(r'^    "(\w+)": \(', source.split("RELEVANT = {", 1)[1].split("\n}", 1)[0], re.M))
    for rule in TABLE:
        switches = {getattr(p, "name", p) for p in rule.params}
        assert switches & relevant or rule.name in NOT_IN_GOLDEN_SWITCHES, (
            f"normalize rule {rule.name!r}: add golden rows to tests/text/golden_tweets.py and its switch to RELEVANT "
            "in tests/text/test_normalize.py (docs/normalization.md, 'Adding a rule')"
        )


# The frozen command line. Adding to it must be deliberate: a new experiment (a loss, a schedule, a
# masking variant, a task) is a params.yaml key, which DVC invalidates on and MLflow records; a flag
# is neither. Flags are for paths between stages and for the commands outside the pipeline.
CLI = {
    "compare": ("--exp-json", "--include-baseline", "--metric", "--out", "--rev", "--task", "-o", "-t"),
    "embed": ("--aux-column", "--batch-size", "--compile", "--device", "--format", "--id-column", "--input", "--model", "--output", "--params",
              "--pooling", "--precision", "--progress", "--text-column", "--vocab-model", "-i", "-m", "-o", "-p"),
    "evaluate": ("--model-dir", "--out-dir", "--params", "--shards-dir", "--split", "--vocab-model", "-p"),
    "export-hf": ("--encoder-only", "--family", "--model", "--out", "--vocab-model", "-m", "-o"),
    "export-onnx": ("--int8", "--model", "--out", "-m", "-o"),  # a deployment format (issue 26), not an experiment knob
    "finetune": ("--checkpoint-dir", "--model-out", "--params", "--pretrained-dir", "--report-out", "--task", "--vocab-model", "-p", "-t"),
    "import-hf": ("--approximate-gelu", "--max-len", "--model", "--out", "--seed", "-m", "-o"),
    "normalize": ("--out-dir", "--params", "-p"),
    "pairs": ("--normalized-dir", "--out-dir", "--params", "--stats-path", "--vocab-model", "-p"),
    "predict": ("--aux-column", "--batch-size", "--compile", "--device", "--format", "--id-column", "--input", "--model", "--output",
                "--precision", "--progress", "--text-column", "-i", "-m", "-o"),
    "preset": ("--params", "--write", "-p", "name"),
    "pretrain": ("--max-steps", "--out-dir", "--params", "--reports-dir", "--shards-dir", "--vocab-model", "-p"),
    "report": ("--evaluate-metrics", "--finetune-reports", "--out-dir", "--params", "--pretrain-metrics", "-p"),
    "vocab": ("--normalized-dir", "--out-dir", "--params", "--stats-path", "-p"),
}

GLOBAL_OPTIONS = ("--version",)


def test_no_new_cli_commands_or_options():
    import typer

    from pipeline.cli import app

    group = typer.main.get_command(app)
    found = {name: tuple(sorted(o for p in cmd.params for o in p.opts)) for name, cmd in group.commands.items()}
    assert found == CLI, "the CLI changed: new experiments are params keys, not flags (update CLI here only on purpose)"
    assert tuple(sorted(o for p in group.params for o in p.opts)) == GLOBAL_OPTIONS
