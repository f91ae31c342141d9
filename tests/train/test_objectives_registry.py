"""The objective registry: names are unique, every registered objective has its own test module, and a
registered objective takes part in pre-training only when the model config turns it on."""

from __future__ import annotations

from pathlib import Path

import pytest

from twilbert.model.config import ModelConfig
from twilbert.train.objectives import OBJECTIVES, Objective, Sums, pretraining_metric_names, pretraining_objectives, register

HERE = Path(__file__).parent


def test_every_registered_objective_has_a_test_module():
    missing = [name for name in OBJECTIVES if not (HERE / f"test_objective_{name}.py").is_file()]
    assert not missing, f"add tests/train/test_objective_<name>.py for {missing}"


def test_names_are_unique_and_registration_order_is_summation_order():
    names = list(OBJECTIVES)
    assert {"mlm", "rop", "task"} <= set(names) and names.index("mlm") < names.index("rop")  # MLM is the logged loss's main term
    with pytest.raises(ValueError, match="registered twice"):
        register(OBJECTIVES["mlm"])


def test_pretraining_objectives_and_their_metric_columns():
    assert [type(o) for o in pretraining_objectives(ModelConfig())] == [OBJECTIVES["mlm"], OBJECTIVES["rop"]]
    assert pretraining_metric_names() == ("mlm_loss", "mlm_accuracy", "rop_loss", "rop_accuracy")
    assert all(issubclass(cls, Objective) and issubclass(cls.stats_type, Sums) for cls in OBJECTIVES.values())
