"""One rule, the section layout, decides what reruns a stage (dvc.yaml ``params:``), what MLflow logs
as params (the stage's ``tracked(...)`` call) and what enters the pre-training fingerprint."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from pipeline.params import Params
from pipeline.stage_params import NON_RECIPE_SECTIONS, STAGE_PARAMS, recipe_sections, stage_params
from twilbert.train.config import ImplConfig, RunConfig, TrainingConfig

REPO = Path(__file__).resolve().parents[2]


def _dvc_params() -> dict[str, list[str]]:
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    return {name: [str(k) for k in body.get("do", body).get("params", [])] for name, body in stages.items()}


def test_every_dvc_stage_has_one_declaration():
    assert set(_dvc_params()) == set(STAGE_PARAMS)


@pytest.mark.parametrize("stage", sorted(STAGE_PARAMS))
def test_tracked_sections_equal_the_dvc_params(stage):
    assert [k.replace("{task}", "${key}") for k in STAGE_PARAMS[stage]] == _dvc_params()[stage]
    # the stage's command logs exactly these: its tracked(...) call takes them from STAGE_PARAMS
    source = (REPO / "stages" / f"{stage}.py").read_text()
    assert re.search(rf'tracked\(.*stage_params\("{stage}"', source), f"stages/{stage}.py: tracked(..., stage_params({stage!r}), ...)"


@pytest.mark.parametrize("stage", sorted(STAGE_PARAMS))
def test_no_stage_depends_on_speed_or_bookkeeping(stage):
    sections = {key.split(".")[0] for key in STAGE_PARAMS[stage]}
    assert not sections & set(NON_RECIPE_SECTIONS), stage
    assert sections <= set(recipe_sections(Params())), stage


def test_the_sections_are_recipe_or_not_and_nothing_else():
    names = [f.name for f in dataclasses.fields(Params)]
    assert set(NON_RECIPE_SECTIONS) <= set(names)
    assert list(recipe_sections(Params())) == [n for n in names if n not in NON_RECIPE_SECTIONS]


def test_placeholders_are_filled():
    assert stage_params("finetune", task="sentiment") == ("finetuning", "tasks.sentiment", "normalize.rules")


def test_the_run_fingerprint_hashes_the_training_section_in_full():
    """No hand list of excluded keys: whatever is in ``training`` is recipe and enters the fingerprint;
    speed and bookkeeping live in ``impl`` and ``run``, which the run config never sees."""
    import inspect

    import twilbert.train.pretrain as pretrain

    assert not hasattr(pretrain, "FINGERPRINT_EXCLUDED")
    assert set(inspect.signature(pretrain.run_config).parameters) == {"model_cfg", "training", "world_size", "shards_dir", "tokenizer_sha256"}
    recipe = {f.name for f in dataclasses.fields(TrainingConfig)}
    assert not recipe & {f.name for f in dataclasses.fields(RunConfig)}
    assert not recipe & {f.name for f in dataclasses.fields(ImplConfig)}


def test_mlflow_params_are_recipe_only(monkeypatch):
    """The stage run logs its STAGE_PARAMS keys; the parent run every recipe key; neither any
    ``impl``/``run``/``tracking`` key (speed and bookkeeping are not params of an experiment)."""
    from contextlib import contextmanager

    import pipeline.tracking
    from pipeline.common import tracked

    seen = {}

    @contextmanager
    def fake_stage_run(stage, params_path, params_flat, *, all_params_flat=None, **kwargs):
        seen.update(stage=params_flat, parent=all_params_flat)
        yield None

    monkeypatch.setattr(pipeline.tracking, "stage_run", fake_stage_run)
    with tracked("pretrain", Path("params.yaml"), Params(), stage_params("pretrain")):
        pass
    assert {k.split(".")[0] for k in seen["stage"]} == {"model", "training", "representation", "normalize"}
    assert "representation.max_len" in seen["stage"] and "training.lr" in seen["stage"]
    parent_sections = {k.split(".")[0] for k in seen["parent"]}
    assert not parent_sections & set(NON_RECIPE_SECTIONS)
    assert {"model", "training", "finetuning"} <= parent_sections
