"""``type: single_label``: labels, outputs, losses, predictions, report rows, baseline, predict output."""

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

KIND = get_task_type("single_label")


def task(**kw) -> TaskConfig:
    return TaskConfig(**{"train_file": "a", "dev_file": "b", "test_file": "c", "categories": {"N": 0, "NEU": 1, "P": 2}, **kw})


def frame(values: list[str]) -> pl.DataFrame:
    return pl.DataFrame({"CLASS": values}).with_row_index(ROW)


def test_labels_are_category_indices_and_unknown_ones_name_the_line():
    t = task()
    np.testing.assert_array_equal(KIND.read_labels(frame(["P", "N", "NEU"]), "CLASS", t, Path("f.tsv")), [2, 0, 1])
    with pytest.raises(TaskDataError, match=r"f\.tsv: label not in categories \['N', 'NEU', 'P'\]: line 3: 'X'"):
        KIND.read_labels(frame(["P", "X"]), "CLASS", t, Path("f.tsv"))


def test_config_checks():
    assert task().n_outputs == 3 and task().kind is KIND
    with pytest.raises(ConfigError, match="categories: needs at least 2 labels"):
        task(categories={"a": 0})
    with pytest.raises(ConfigError, match="eval_metric: pearson of class indices is meaningful only for ordered classes"):
        task(eval_metric="pearson")
    assert task(eval_metric="pearson", ordinal=True).kind.selection_metric(task(eval_metric="pearson", ordinal=True)) == "pearson"


def test_outputs_losses_and_predictions():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 3.0]])
    probs = KIND.probabilities(logits)
    torch.testing.assert_close(probs.sum(-1), torch.ones(2))
    np.testing.assert_array_equal(KIND.predictions(probs.numpy(), 0.5), [0, 2])
    assert KIND.losses[0] == "cross_entropy" and "bce" not in KIND.losses and "mse" not in KIND.losses
    ce = KIND.loss("cross_entropy")(logits, torch.tensor([0, 2]))
    torch.testing.assert_close(ce, torch.nn.functional.cross_entropy(logits, torch.tensor([0, 2])))
    assert float(KIND.loss("macro_f1")(logits * 100, torch.tensor([0, 2]))) < -0.6  # soft F1 of near one-hot outputs


def test_class_weights_report_rows_and_predict_output():
    t = task(class_weights="auto")
    np.testing.assert_allclose(KIND.class_weights(t, np.array([0, 0, 0, 1, 2, 2])), [1.0, 3.0, 1.5])
    assert KIND.label_text(np.int64(1), t) == "NEU" and KIND.probability_columns(t) == ["p_N", "p_NEU", "p_P"]
    rows = KIND.predict_rows(np.array([[0.2, 0.1, 0.7]], dtype=np.float32), ["N", "NEU", "P"], 0.5)
    assert rows == [{"label": "P", "probabilities": {"N": pytest.approx(0.2), "NEU": pytest.approx(0.1), "P": pytest.approx(0.7)}}]


def test_baseline_probabilities_sum_to_one():
    from scipy.sparse import csr_matrix

    t = task()
    X = csr_matrix(np.eye(6))
    labels = np.array([0, 1, 2, 0, 1, 2])
    predict = KIND.baseline_fit(t, X, labels, KIND.baseline_grid()[0], seed=0)
    probs = predict(X)
    assert probs.shape == (6, 3)
    np.testing.assert_allclose(probs.sum(1), 1.0)
