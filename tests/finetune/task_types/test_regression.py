"""``type: regression``: one real value per example, mse, Pearson selection, values in every report."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from twilbert.config import ConfigError
from twilbert.finetune.config import TaskConfig
from twilbert.finetune.task_files import ROW, TaskDataError
from twilbert.finetune.task_types import get_task_type

KIND = get_task_type("regression")


def task(**kw) -> TaskConfig:
    return TaskConfig(**{"train_file": "a", "dev_file": "b", "test_file": "c", "type": "regression", "eval_metric": "pearson", **kw})


def test_values_are_read_and_non_numbers_name_the_line():
    got = KIND.read_labels(pl.DataFrame({"V": [" 0.5", "-1e-2", "3"]}).with_row_index(ROW), "V", task(), Path("f.tsv"))
    np.testing.assert_allclose(got, [0.5, -0.01, 3.0])
    with pytest.raises(TaskDataError, match=r"f\.tsv: not a finite number: line 3: 'inf'"):
        KIND.read_labels(pl.DataFrame({"V": ["1", "inf"]}).with_row_index(ROW), "V", task(), Path("f.tsv"))


def test_config_checks():
    assert task().n_outputs == 1 and KIND.selection_metric(task()) == "pearson"
    with pytest.raises(ConfigError, match="categories: must be empty for a regression task"):
        task(categories={"a": 0, "b": 1})
    with pytest.raises(ConfigError, match="eval_metric: a regression task selects on pearson"):
        task(eval_metric="f1")
    with pytest.raises(ConfigError, match="class_weights: a regression task takes no class weights"):
        task(class_weights="auto")
    with pytest.raises(ConfigError, match="ordinal: is for classification tasks"):
        task(ordinal=True)


def test_outputs_loss_and_predictions():
    out = torch.tensor([[0.5], [1.0]])
    torch.testing.assert_close(KIND.probabilities(out), torch.tensor([0.5, 1.0]))
    assert KIND.losses == ("mse",)
    assert float(KIND.loss("mse")(out, torch.tensor([1.0, 1.0]))) == pytest.approx(0.125)
    np.testing.assert_array_equal(KIND.predictions(np.array([[0.5], [1.0]]), 0.5), [0.5, 1.0])
    assert KIND.class_weights(task(), np.zeros(3)) is None


def test_report_rows_and_predict_output():
    assert KIND.label_text(np.float32(0.123456789), task()) == "0.123457" and KIND.probability_columns(task()) == []
    assert KIND.class_report_note()[0].startswith("A regression task has no classes")
    assert KIND.predict_rows(np.array([0.25, -1.0]), [], 0.5) == [{"value": 0.25}, {"value": -1.0}]
    assert KIND.saved_info(task()) == {"multi_label_format": None, "threshold": None}


def test_baseline_is_a_ridge_regression():
    from scipy.sparse import csr_matrix

    X = csr_matrix(np.eye(4))
    y = np.array([1.0, -1.0, 0.5, 0.0], dtype=np.float32)
    grid = KIND.baseline_grid()
    assert [g["alpha"] for g in grid] == sorted((g["alpha"] for g in grid), reverse=True)  # strong to weak
    pred = KIND.baseline_fit(task(), X, y, {"alpha": 1e-6}, seed=0)(X)
    np.testing.assert_allclose(pred, y, atol=1e-4)
