"""``type: multi_label``: any number of categories per example, one sigmoid per category.

The class field holds ``label_separator``-joined names (empty = no label), or one 0/1 per category
in index order (``multi_label_format: multi_hot``, the original's SemEval E-c layout, where the label
count came from the data; here ``categories`` names the positions). A label is predicted when its
probability reaches ``threshold``. The original silently dropped ``class_weights: auto`` for
multi-label tasks; here a label's weight comes from its positives (docs/deviations.md#class-weights).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from twilbert.config import check
from twilbert.finetune.config import SOFT_LOSSES
from twilbert.finetune.task_files import ROW, TaskDataError, file_line, rows_where
from twilbert.finetune.task_types.base import ClassificationType, register

if TYPE_CHECKING:
    import torch

    from twilbert.finetune.config import TaskConfig
    from twilbert.finetune.losses import LossFn


@register
class MultiLabel(ClassificationType):
    name = "multi_label"
    hf_problem_type = "multi_label_classification"
    losses = ("bce", *SOFT_LOSSES)
    baseline_model = "logistic regression (one-vs-rest, liblinear)"
    min_categories = 1

    def check_selection(self, task: TaskConfig) -> None:
        check(task.eval_metric != "pearson", "eval_metric", "pearson is not defined for a multi-label task")
        check(not task.ordinal, "ordinal", "a multi-label task has no ordered classes")
        super().check_selection(task)

    def read_labels(self, df: pl.DataFrame, col: str, task: TaskConfig, path: Path) -> np.ndarray:
        n, c = df.height, len(task.categories)
        if task.multi_label_format == "multi_hot":
            parts = df[col].str.split(task.label_separator)
            rows_where(df, parts.list.len() != c, path, f"expected {c} '{task.label_separator}'-separated 0/1 values ({task.labels})", col)
            rows_where(df, ~parts.list.eval(pl.element().is_in(["0", "1"])).list.all(), path, "multi-hot values must be 0 or 1", col)
            return (parts.explode().to_numpy() == "1").reshape(n, c).astype(np.float32)  # (N, C)
        # names: an empty field is no label; every listed name must be a category ("a||b" names '')
        parts = df.select(
            pl.when(pl.col(col) == "").then(pl.lit([], dtype=pl.List(pl.String))).otherwise(pl.col(col).str.split(task.label_separator))
        ).to_series()
        known = parts.list.eval(pl.element().is_in(list(task.categories))).list.all()
        if not known.all():
            row = int(known.not_().arg_true()[0])
            bad = [v for v in parts[row].to_list() if v not in task.categories]
            count = int((~known).sum())
            raise TaskDataError(
                f"{path}: line {file_line(df[ROW][row])}: label {bad[0]!r} not in categories {task.labels}"
                + (f" ({count} rows with unknown labels)" if count > 1 else "")
            )
        out = np.zeros((n, c), dtype=np.float32)
        lens = parts.list.len().to_numpy()
        idx = parts.explode().drop_nulls().replace_strict(dict(task.categories), return_dtype=pl.Int64).to_numpy()
        out[np.repeat(np.arange(n), lens), idx] = 1.0  # (N, C) multi-hot
        return out

    def label_counts(self, train_labels: np.ndarray, n_classes: int) -> np.ndarray:
        return train_labels.sum(0)  # (C,) positives per label

    def loss(self, name: str, class_weights: torch.Tensor | None = None) -> LossFn:
        import torch
        import torch.nn.functional as F

        from twilbert.finetune.losses import SOFT

        if name == "bce":  # pos_weight = the class weights: `auto` up-weights the positives of rare labels
            return lambda logits, labels: F.binary_cross_entropy_with_logits(logits.float(), labels, pos_weight=class_weights)
        soft = SOFT[name]
        return lambda logits, labels: soft(torch.sigmoid(logits.float()), labels)

    def probabilities(self, outputs: torch.Tensor) -> torch.Tensor:
        import torch

        return torch.sigmoid(outputs.float())  # (N, C)

    def predictions(self, probs: np.ndarray, threshold: float) -> np.ndarray:
        return (probs >= threshold).astype(np.int64)  # (N, C) multi-hot

    def metrics(self, gold: np.ndarray, probs: np.ndarray, task: TaskConfig) -> dict[str, Any]:
        from twilbert.finetune.metrics import multi_label_metrics

        return multi_label_metrics(gold, probs, task)

    def label_text(self, value: Any, task: TaskConfig) -> str:
        return task.label_separator.join(task.labels[i] for i in np.flatnonzero(value))

    def plot(self, plt: Any, gold: np.ndarray, pred: np.ndarray, task: TaskConfig) -> Any:
        g, p = gold.astype(bool), pred.astype(bool)
        mat = np.stack([(~g & ~p).sum(0), (~g & p).sum(0), (g & ~p).sum(0), (g & p).sum(0)], axis=1)  # (C, 4)
        return self._matrix_figure(plt, mat, task.labels, ["TN", "FP", "FN", "TP"], "outcome", "label")

    def baseline_fit(self, task: TaskConfig, X: Any, labels: np.ndarray, params: dict[str, float], seed: int):
        from twilbert.finetune.baseline_models import fit_one_vs_rest

        weights = self.class_weights(task, labels)
        targets = []
        for c in range(len(task.categories)):
            yc = labels[:, c].astype(np.int64)
            targets.append((yc, np.where(yc == 1, weights[c], 1.0)))  # BCE pos_weight
        return fit_one_vs_rest(X, targets, params["C"], seed)  # (N, C) sigmoids, thresholded by the metrics

    def predict_rows(self, probs: np.ndarray, labels: list[str], threshold: float) -> list[dict[str, Any]]:
        hits = probs >= threshold  # (N, C), as the fine-tuning metrics
        return [{"labels": [labels[j] for j in np.flatnonzero(h)], "probabilities": dict(zip(labels, map(float, p)))}
                for h, p in zip(hits, probs)]

    def saved_info(self, task: TaskConfig) -> dict[str, Any]:
        return {"multi_label_format": task.multi_label_format, "threshold": task.threshold}
