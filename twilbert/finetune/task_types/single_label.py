"""``type: single_label``: one category per example, a softmax over the categories."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from twilbert.config import check
from twilbert.finetune.config import SOFT_LOSSES
from twilbert.finetune.task_files import rows_where
from twilbert.finetune.task_types.base import ClassificationType, register

if TYPE_CHECKING:
    import torch

    from twilbert.finetune.config import TaskConfig
    from twilbert.finetune.losses import LossFn


@register
class SingleLabel(ClassificationType):
    name = "single_label"
    hf_problem_type = "single_label_classification"
    losses = ("cross_entropy", *SOFT_LOSSES)
    baseline_model = "logistic regression (one-vs-rest, liblinear)"

    def check_selection(self, task: TaskConfig) -> None:
        # Class indices are names unless the task declares them ordered (N=0 < NEU=1 < P=2); the
        # original computed pearson on the class ids of any task (docs/deviations.md#pearson-ordinal).
        check(
            task.eval_metric != "pearson" or task.ordinal,
            "eval_metric",
            "pearson of class indices is meaningful only for ordered classes: set ordinal: true if the "
            "categories' indices are ordered (N: 0, NEU: 1, P: 2), or select on f1/accuracy",
        )
        super().check_selection(task)

    def read_labels(self, df: pl.DataFrame, col: str, task: TaskConfig, path: Path) -> np.ndarray:
        s = df[col]
        rows_where(df, ~s.is_in(list(task.categories)), path, f"label not in categories {task.labels}", col)
        return s.replace_strict(dict(task.categories), return_dtype=pl.Int64).to_numpy()  # (N,)

    def label_counts(self, train_labels: np.ndarray, n_classes: int) -> np.ndarray:
        return np.bincount(train_labels, minlength=n_classes)  # (C,)

    def loss(self, name: str, class_weights: torch.Tensor | None = None) -> LossFn:
        import torch.nn.functional as F

        from twilbert.finetune.losses import SOFT, weighted_cross_entropy

        if name == "cross_entropy":
            return lambda logits, labels: weighted_cross_entropy(logits, labels, class_weights)
        soft = SOFT[name]  # a batch-level metric of the softmax against one-hot labels
        return lambda logits, labels: soft(F.softmax(logits.float(), -1), F.one_hot(labels, logits.shape[-1]).float())

    def probabilities(self, outputs: torch.Tensor) -> torch.Tensor:
        import torch.nn.functional as F

        return F.softmax(outputs.float(), dim=-1)  # (N, C)

    def predictions(self, probs: np.ndarray, threshold: float) -> np.ndarray:
        return probs.argmax(-1)  # (N,) class index

    def metrics(self, gold: np.ndarray, probs: np.ndarray, task: TaskConfig) -> dict[str, Any]:
        from twilbert.finetune.metrics import single_label_metrics

        return single_label_metrics(gold, probs.argmax(-1), task)

    def label_text(self, value: Any, task: TaskConfig) -> str:
        return task.labels[int(value)]

    def plot(self, plt: Any, gold: np.ndarray, pred: np.ndarray, task: TaskConfig) -> Any:
        from twilbert.finetune.metrics import confusion

        mat = confusion(gold, pred, len(task.labels))  # (C, C)
        return self._matrix_figure(plt, mat, task.labels, task.labels, "predicted", "gold")

    def baseline_fit(self, task: TaskConfig, X: Any, labels: np.ndarray, params: dict[str, float], seed: int):
        from twilbert.finetune.baseline_models import fit_one_vs_rest

        weights = self.class_weights(task, labels)
        sample_weight = weights[labels].astype(np.float64)  # weighted cross-entropy: example i weighs w[y_i]
        targets = [((labels == c).astype(np.int64), sample_weight) for c in range(len(task.categories))]
        sigmoids = fit_one_vs_rest(X, targets, params["C"], seed)

        def predict(X_new: Any) -> np.ndarray:
            # sklearn's OneVsRestClassifier convention: per-class sigmoids normalised to sum to 1
            p = sigmoids(X_new)  # (N, C)
            total = p.sum(1, keepdims=True)  # (N, 1)
            return np.divide(p, total, out=np.full_like(p, 1.0 / p.shape[1]), where=total > 0)  # (N, C)

        return predict

    def predict_rows(self, probs: np.ndarray, labels: list[str], threshold: float) -> list[dict[str, Any]]:
        best = probs.argmax(-1)  # (N,)
        return [{"label": labels[j], "probabilities": dict(zip(labels, map(float, p)))} for j, p in zip(best, probs)]
