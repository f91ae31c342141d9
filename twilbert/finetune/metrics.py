"""Task metrics from label arrays, and the dev selection score; each task type picks its metrics here.

Unlike the original ``FinetuningMonitor`` (docs/deviations.md#stance-f1, #class-metric-zero,
#multilabel-accuracy, #pearson-ordinal):
* ``stance_f1`` is the mean of per-class F1 over the *named* classes, computed from the labels (the
  original parsed lines of sklearn's printed report); for a multi-label task it is the mean of the
  named labels' binary F1 (each label a yes/no decision at ``threshold``);
* ``class_metric: 0`` selects class 0 (the original treated 0 as unset);
* multi-label predictions are thresholded probabilities; "accuracy" is the sample-wise Jaccard index
  |gold ∩ pred| / |gold ∪ pred| (1 when both are empty), the SemEval-2018 E-c metric (the original
  computed a soft Jaccard on raw sigmoid outputs);
* ``pearson`` on a regression task is the correlation of gold and predicted values; on a
  classification task it is the correlation of gold and predicted *class indices*, reported (and
  selectable) only for a task declared ``ordinal`` (e.g. N=0 < NEU=1 < P=2).

All values are plain floats (JSON-ready). A Pearson correlation with a constant side is reported as
0.0 rather than NaN (no linear relation can be measured; NaN would also break JSON metrics files).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    hamming_loss,
    jaccard_score,
    mean_absolute_error,
    mean_squared_error,
    precision_recall_fscore_support,
)

from twilbert.finetune.config import TaskConfig

AVERAGES = ("macro", "micro", "weighted")


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if len(x) < 2:
        return 0.0
    dx, dy = x - x.mean(), y - y.mean()
    denom = np.sqrt((dx * dx).sum() * (dy * dy).sum())
    return float((dx * dy).sum() / denom) if denom > 0 else 0.0


def mean_sd(values: list[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample sd (ddof 1; None for one value) over runs. (None, None) when any run lacks the
    value (a diverged run writes null): a mean silently over fewer runs than claimed would mislead."""
    if not values or any(v is None or not np.isfinite(v) for v in values):
        return None, None
    a = np.asarray(values, dtype=np.float64)
    return float(a.mean()), (float(a.std(ddof=1)) if len(a) > 1 else None)


def per_class_report(gold: np.ndarray, pred: np.ndarray, labels: list[str]) -> dict[str, dict[str, float]]:
    """``{label: {precision, recall, f1, support}}``; gold/pred are class indices (N,) or multi-hot (N, C)."""
    p, r, f, s = precision_recall_fscore_support(gold, pred, labels=None if gold.ndim == 2 else list(range(len(labels))), average=None, zero_division=0)
    return {lab: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])} for i, lab in enumerate(labels)}


def stance_f1(gold: np.ndarray, pred: np.ndarray, class_ids: list[int]) -> float:
    """Mean F1 over ``class_ids`` (StanceCat's (F_AGAINST + F_FAVOR) / 2). ``gold``/``pred`` are class
    indices (N,) or multi-hot (N, C); for multi-hot, each named label's F1 is its binary F1."""
    f = precision_recall_fscore_support(gold, pred, labels=class_ids, average=None, zero_division=0)[2]
    return float(np.mean(f))


def _averaged(gold, pred, labels) -> dict[str, float]:
    out = {}
    for avg in AVERAGES:
        p, r, f, _ = precision_recall_fscore_support(gold, pred, labels=labels, average=avg, zero_division=0)
        out.update({f"precision_{avg}": float(p), f"recall_{avg}": float(r), f"f1_{avg}": float(f)})
    return out


def single_label_metrics(gold: np.ndarray, pred: np.ndarray, task: TaskConfig) -> dict[str, Any]:
    labels = task.labels
    ids = list(range(len(labels)))
    m: dict[str, Any] = {"accuracy": float(accuracy_score(gold, pred)), **_averaged(gold, pred, ids)}
    if task.ordinal:
        m["pearson"] = pearson(gold, pred)
    if task.stance_f1:
        m["stance_f1"] = stance_f1(gold, pred, [task.categories[c] for c in task.stance_f1])
    m["per_class"] = per_class_report(gold, pred, labels)
    return m


def multi_label_metrics(gold: np.ndarray, probs: np.ndarray, task: TaskConfig) -> dict[str, Any]:
    pred = (probs >= task.threshold).astype(np.int64)  # (N, C)
    gold = gold.astype(np.int64)
    jac = float(jaccard_score(gold, pred, average="samples", zero_division=1.0))
    m: dict[str, Any] = {
        "accuracy": jac,  # the SemEval E-c "accuracy" (and the original's multi-label "accuracy" key)
        "jaccard": jac,
        "subset_accuracy": float(accuracy_score(gold, pred)),
        "hamming_loss": float(hamming_loss(gold, pred)),
        **_averaged(gold, pred, None),
    }
    if task.stance_f1:
        m["stance_f1"] = stance_f1(gold, pred, [task.categories[c] for c in task.stance_f1])
    m["per_class"] = per_class_report(gold, pred, task.labels)
    return m


def regression_metrics(gold: np.ndarray, pred: np.ndarray) -> dict[str, Any]:
    return {
        "mse": float(mean_squared_error(gold, pred)),
        "mae": float(mean_absolute_error(gold, pred)),
        "pearson": pearson(gold, pred),
    }


def predictions_from_outputs(probs: np.ndarray, task: TaskConfig) -> np.ndarray:
    """Class index (N,), multi-hot (N, C) at ``threshold``, or the value (N,): the task type's."""
    return task.kind.predictions(probs, task.threshold)


def compute_metrics(gold: np.ndarray, probs: np.ndarray, task: TaskConfig) -> dict[str, Any]:
    """All metrics of a split from gold labels and model probabilities (softmax / sigmoid / values)."""
    return task.kind.metrics(gold, probs, task)


def confusion(gold: np.ndarray, pred: np.ndarray, n_classes: int) -> np.ndarray:
    """(C, C) counts, rows = gold, columns = predicted."""
    return confusion_matrix(gold, pred, labels=list(range(n_classes)))


def selection_metric(task: TaskConfig) -> str:
    """Name of the value dev selection maximises: a key of the metrics dict, or
    ``per_class.<label>.<metric>`` for ``class_metric``."""
    return task.kind.selection_metric(task)


def selection_score(metrics: dict[str, Any], task: TaskConfig) -> float:
    """The dev score to maximise (higher is better), per ``eval_metric`` / ``average_metric`` /
    ``class_metric`` / ``stance_f1`` (precedence in :class:`TaskConfig`)."""
    return task.kind.selection_score(metrics, task)


class BestTracker:
    """Keeps the best epoch: a new best must be strictly greater (ties keep the earlier epoch; NaN
    never wins, but the first epoch is always a best so a model is always saved). ``patience`` > 0
    stops after that many epochs without improvement."""

    def __init__(self, patience: int = 0) -> None:
        self.patience = patience
        self.best_score: float | None = None
        self.best_epoch: int | None = None
        self.since_best = 0

    def update(self, score: float, epoch: int) -> bool:
        """Record ``score`` for ``epoch``; True when it is the new best."""
        s = float("-inf") if score != score else score  # NaN -> -inf
        if self.best_score is None or s > self.best_score:
            self.best_score, self.best_epoch, self.since_best = s, epoch, 0
            return True
        self.since_best += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.patience > 0 and self.since_best >= self.patience


__all__ = [
    "BestTracker",
    "compute_metrics",
    "confusion",
    "mean_sd",
    "multi_label_metrics",
    "pearson",
    "per_class_report",
    "predictions_from_outputs",
    "regression_metrics",
    "selection_metric",
    "selection_score",
    "single_label_metrics",
    "stance_f1",
]
