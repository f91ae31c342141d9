"""``type: multi_label``: label sets (names or multi-hot), sigmoids at a threshold, report rows, predict output."""

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

KIND = get_task_type("multi_label")


def task(**kw) -> TaskConfig:
    return TaskConfig(**{"train_file": "a", "dev_file": "b", "test_file": "c", "type": "multi_label",
                         "categories": {"anger": 0, "joy": 1, "fear": 2}, **kw})


def frame(values: list[str]) -> pl.DataFrame:
    return pl.DataFrame({"CLASS": values}).with_row_index(ROW)


def test_label_sets_as_names_or_multi_hot():
    got = KIND.read_labels(frame(["anger|fear", "", "joy"]), "CLASS", task(), Path("f.tsv"))
    np.testing.assert_array_equal(got, [[1, 0, 1], [0, 0, 0], [0, 1, 0]])
    hot = KIND.read_labels(frame(["1|0|1", "0|0|0"]), "CLASS", task(multi_label_format="multi_hot"), Path("f.tsv"))
    np.testing.assert_array_equal(hot, [[1, 0, 1], [0, 0, 0]])
    with pytest.raises(TaskDataError, match=r"f\.tsv: line 3: label 'love' not in categories"):
        KIND.read_labels(frame(["joy", "love"]), "CLASS", task(), Path("f.tsv"))


def test_config_checks():
    assert task(categories={"a": 0}).n_outputs == 1  # one label is a valid multi-label task
    with pytest.raises(ConfigError, match="eval_metric: pearson is not defined for a multi-label task"):
        task(eval_metric="pearson")
    with pytest.raises(ConfigError, match="ordinal: a multi-label task has no ordered classes"):
        task(ordinal=True, eval_metric="accuracy")


def test_outputs_losses_and_predictions():
    logits = torch.tensor([[2.0, -2.0, 0.0]])
    probs = KIND.probabilities(logits)
    torch.testing.assert_close(probs, torch.sigmoid(logits))
    np.testing.assert_array_equal(KIND.predictions(probs.numpy(), 0.5), [[1, 0, 1]])  # 0.5 reaches the threshold
    assert KIND.losses[0] == "bce" and "cross_entropy" not in KIND.losses
    y = torch.tensor([[1.0, 0.0, 1.0]])
    torch.testing.assert_close(KIND.loss("bce")(logits, y), torch.nn.functional.binary_cross_entropy_with_logits(logits, y))


def test_class_weights_report_rows_saved_info_and_predict_output():
    t = task(class_weights="auto", threshold=0.4)
    y = np.array([[1, 0, 0], [1, 1, 0], [1, 0, 1], [1, 1, 0]], dtype=np.float32)
    np.testing.assert_allclose(KIND.class_weights(t, y), [1.0, 2.0, 4.0])  # per-label positives
    assert KIND.label_text(np.array([1, 0, 1]), t) == "anger|fear" and KIND.label_text(np.zeros(3), t) == ""
    assert KIND.saved_info(t) == {"multi_label_format": "names", "threshold": 0.4}
    rows = KIND.predict_rows(np.array([[0.45, 0.1, 0.39]], dtype=np.float32), t.labels, 0.4)
    assert rows[0]["labels"] == ["anger"] and set(rows[0]["probabilities"]) == {"anger", "joy", "fear"}


def test_baseline_gives_per_label_sigmoids():
    from scipy.sparse import csr_matrix

    X = csr_matrix(np.eye(4))
    y = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 0]], dtype=np.float32)  # fear never on: a constant
    probs = KIND.baseline_fit(task(), X, y, KIND.baseline_grid()[0], seed=0)(X)
    assert probs.shape == (4, 3) and np.all(probs[:, 2] == 0.0)
