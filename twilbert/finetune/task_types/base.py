"""What a task's labels are, and everything that follows from it: the :class:`TaskType` protocol.

``tasks.<name>.type`` names one registered type. The type reads the label column of a split file,
sizes the head, says which losses fit, turns head outputs into probabilities and predictions,
computes the metrics and the dev selection score, writes labels into report rows and plots, picks
the classical baseline's model, and shapes what ``twilbert predict`` returns. The code around it
(config, data, losses, metrics, reports, baseline, inference) asks the type and never switches on
its name. Types are stateless: every method gets the :class:`TaskConfig` it needs. Type modules
import torch inside the methods that use it, so that loading params (which validates every task
through its type) stays free of torch.

A new type is one module of this package defining a subclass decorated with :func:`register`, one
import line in the package's ``__init__``, and its test module ``tests/finetune/task_types/test_<name>.py``
(a test checks that every registered type has one).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from twilbert.config import check

if TYPE_CHECKING:
    import polars as pl
    import torch

    from twilbert.finetune.config import TaskConfig
    from twilbert.finetune.losses import LossFn

TASK_TYPES: dict[str, TaskType] = {}


def register(cls: type[TaskType]) -> type[TaskType]:
    """Class decorator: make ``cls`` available as ``tasks.<name>.type: <cls.name>``."""
    if cls.name in TASK_TYPES:
        raise ValueError(f"task type {cls.name!r} registered twice")
    TASK_TYPES[cls.name] = cls()
    return cls


class TaskType:
    """The protocol. Subclasses set the class attributes and implement the methods that raise."""

    name: ClassVar[str]  # the value of tasks.<name>.type
    losses: ClassVar[tuple[str, ...]]  # finetuning.loss values that fit, the first being the usual one
    baseline_model: ClassVar[str]  # the classical baseline's estimator, in words (reports)
    hf_problem_type: ClassVar[str | None] = None  # transformers' config.problem_type (export-hf); None: not exportable

    def __repr__(self) -> str:
        return f"TaskType({self.name!r})"

    @property
    def title(self) -> str:
        """How reports and errors write the type: ``single-label``."""
        return self.name.replace("_", "-")

    # -- config ------------------------------------------------------------------------------------
    def check_labels(self, task: TaskConfig) -> None:
        """Validate the label keys (categories, class weights) of ``task``; ``check`` errors name the key."""
        raise NotImplementedError

    def check_selection(self, task: TaskConfig) -> None:
        """Validate the metric keys (eval_metric, average_metric, ordinal) against this type."""
        raise NotImplementedError

    def n_outputs(self, task: TaskConfig) -> int:
        raise NotImplementedError

    # -- data --------------------------------------------------------------------------------------
    def read_labels(self, df: pl.DataFrame, col: str, task: TaskConfig, path: Path) -> np.ndarray:
        """The label column of one split file, validated (errors name the file and line)."""
        raise NotImplementedError

    def class_weights(self, task: TaskConfig, train_labels: np.ndarray) -> np.ndarray | None:
        """(C,) float32 loss weights per category index, or None for a type without classes."""
        return None

    # -- model outputs -----------------------------------------------------------------------------
    def loss(self, name: str, class_weights: torch.Tensor | None = None) -> LossFn:
        """The loss ``name`` (one of :attr:`losses`; the config has checked that it fits)."""
        raise NotImplementedError

    def probabilities(self, outputs: torch.Tensor) -> torch.Tensor:
        """Head outputs (N, n_outputs) -> what metrics and reports read (float32)."""
        raise NotImplementedError

    def predictions(self, probs: np.ndarray, threshold: float) -> np.ndarray:
        """Probabilities -> the predicted labels, in the layout :meth:`read_labels` gives gold ones."""
        raise NotImplementedError

    # -- evaluation --------------------------------------------------------------------------------
    def metrics(self, gold: np.ndarray, probs: np.ndarray, task: TaskConfig) -> dict[str, Any]:
        """Every metric of a split (per-class tables under ``per_class``), plain floats."""
        raise NotImplementedError

    def selection_metric(self, task: TaskConfig) -> str:
        """The metric dev selection maximises: a key of :meth:`metrics`, or ``per_class.<label>.<metric>``."""
        raise NotImplementedError

    def selection_score(self, metrics: dict[str, Any], task: TaskConfig) -> float:
        return float(metrics[self.selection_metric(task)])

    # -- reports -----------------------------------------------------------------------------------
    def label_text(self, value: Any, task: TaskConfig) -> str:
        """One gold or predicted label as report rows show it (predictions.tsv, confusion.csv)."""
        raise NotImplementedError

    def probability_columns(self, task: TaskConfig) -> list[str]:
        """Extra predictions.tsv columns holding :meth:`probabilities` (none by default)."""
        return []

    def class_report_note(self) -> list[str]:
        """Markdown lines class_report.md opens with (a type without classes says where to look)."""
        return []

    def plot(self, plt: Any, gold: np.ndarray, pred: np.ndarray, task: TaskConfig) -> Any:
        """confusion.png's figure of the test split (``plt`` is matplotlib.pyplot, Agg backend)."""
        raise NotImplementedError

    # -- classical baseline ------------------------------------------------------------------------
    def baseline_grid(self) -> list[dict[str, float]]:
        """The hyper-parameter values the baseline tries, most regularised first (ties keep it)."""
        raise NotImplementedError

    def baseline_fit(self, task: TaskConfig, X: Any, labels: np.ndarray, params: dict[str, float], seed: int) -> Callable[[Any], np.ndarray]:
        """Fit on train features; returns ``predict(X) -> probabilities`` in :meth:`probabilities`' layout."""
        raise NotImplementedError

    # -- prediction --------------------------------------------------------------------------------
    def predict_rows(self, probs: np.ndarray, labels: list[str], threshold: float) -> list[dict[str, Any]]:
        """``twilbert predict``'s output, one dict per text (``labels``/``threshold`` from config.json)."""
        raise NotImplementedError

    def saved_info(self, task: TaskConfig) -> dict[str, Any]:
        """Entries the fine-tuned model's config.json holds for :meth:`predict_rows` (beyond labels)."""
        return {"multi_label_format": None, "threshold": None}


class ClassificationType(TaskType):
    """What single- and multi-label tasks share: named categories with indices 0..C-1, class weights."""

    min_categories: ClassVar[int] = 2

    def check_labels(self, task: TaskConfig) -> None:
        check(len(task.categories) >= self.min_categories, "categories", "needs at least 2 labels")
        idx = sorted(task.categories.values())
        check(idx == list(range(len(idx))), "categories", f"indices must be 0..{len(idx) - 1}, got {idx}")

    def check_selection(self, task: TaskConfig) -> None:
        check(
            task.average_metric != "none" or task.class_metric is not None or task.eval_metric in ("accuracy", "pearson")
            or (bool(task.stance_f1) and task.eval_metric == "f1"),
            "average_metric",
            "'none' gives one value per class: set class_metric to select one",
        )

    def n_outputs(self, task: TaskConfig) -> int:
        return len(task.categories)

    def label_counts(self, train_labels: np.ndarray, n_classes: int) -> np.ndarray:
        """(C,) examples per category in train (for ``class_weights: auto``)."""
        raise NotImplementedError

    def class_weights(self, task: TaskConfig, train_labels: np.ndarray) -> np.ndarray:
        """(C,) float32: a dict's weights (1.0 for categories it does not name); ``auto``:
        ``count(majority) / count(c)`` (the original's ``Utils.max_ratio_weights``; a category absent
        from train counts as 1, so its weight is the largest and finite); ``ones``: all 1."""
        c = len(task.categories)
        if isinstance(task.class_weights, str) and task.class_weights == "ones":
            return np.ones(c, dtype=np.float32)
        if isinstance(task.class_weights, str):  # auto
            counts = np.maximum(np.asarray(self.label_counts(train_labels, c), dtype=np.float64), 1.0)
            return (counts.max() / counts).astype(np.float32)
        w = np.ones(c, dtype=np.float32)
        for label, value in task.class_weights.items():
            w[task.categories[label]] = value
        return w

    def selection_metric(self, task: TaskConfig) -> str:
        """``class_metric`` (one class's eval_metric) wins over ``stance_f1`` (with eval_metric f1),
        which wins over ``eval_metric`` + ``average_metric``."""
        if task.class_metric is not None:
            return f"per_class.{task.labels[task.class_metric]}.{task.eval_metric}"
        if task.eval_metric in ("accuracy", "pearson"):
            return task.eval_metric
        if task.stance_f1 and task.eval_metric == "f1":
            return "stance_f1"
        assert task.average_metric != "none", "TaskConfig rejects average_metric none without class_metric"
        return f"{task.eval_metric}_{task.average_metric}"

    def selection_score(self, metrics: dict[str, Any], task: TaskConfig) -> float:
        if task.class_metric is not None:
            return float(metrics["per_class"][task.labels[task.class_metric]][task.eval_metric])
        return float(metrics[self.selection_metric(task)])

    def probability_columns(self, task: TaskConfig) -> list[str]:
        return [f"p_{label}" for label in task.labels]

    def baseline_grid(self) -> list[dict[str, float]]:
        from twilbert.finetune.baseline_models import C_GRID

        return [{"C": c} for c in C_GRID]

    def _matrix_figure(self, plt: Any, mat: np.ndarray, rows: list[str], cols: list[str], xlabel: str, ylabel: str) -> Any:
        """A count matrix (rows x cols) as a heat map, counts written in when it is small."""
        size = max(4.0, 0.5 * max(len(rows), len(cols)) + 2)
        fig, ax = plt.subplots(figsize=(size, size))
        ax.imshow(mat, cmap="Blues")
        ax.set_xticks(range(len(cols)), cols, rotation=45, ha="right")
        ax.set_yticks(range(len(rows)), rows)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if mat.size <= 400:
            top = mat.max() if mat.size else 0
            for (i, j), v in np.ndenumerate(mat):
                ax.text(j, i, str(v), ha="center", va="center", color="white" if v > top / 2 else "black", fontsize=8)
        ax.set_title("test confusion")
        return fig


__all__ = ["TASK_TYPES", "ClassificationType", "TaskType", "register"]
