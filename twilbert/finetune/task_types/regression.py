"""``type: regression``: one real value per example (the head's single output), selected on Pearson."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from twilbert.config import check
from twilbert.finetune.task_files import rows_where
from twilbert.finetune.task_types.base import TaskType, register

if TYPE_CHECKING:
    import torch

    from twilbert.finetune.config import TaskConfig
    from twilbert.finetune.losses import LossFn


@register
class Regression(TaskType):
    name = "regression"
    hf_problem_type = "regression"
    losses = ("mse",)
    baseline_model = "ridge regression"

    def check_labels(self, task: TaskConfig) -> None:
        check(not task.categories, "categories", "must be empty for a regression task")
        check(task.eval_metric == "pearson", "eval_metric", "a regression task selects on pearson; set eval_metric: pearson")
        check(task.class_weights == "ones", "class_weights", "a regression task takes no class weights")

    def check_selection(self, task: TaskConfig) -> None:
        check(not task.ordinal, "ordinal", "is for classification tasks (a regression task's values are already ordered)")

    def n_outputs(self, task: TaskConfig) -> int:
        return 1

    def read_labels(self, df: pl.DataFrame, col: str, task: TaskConfig, path: Path) -> np.ndarray:
        values = df[col].str.strip_chars().cast(pl.Float64, strict=False)
        bad = values.is_null() | ~values.is_finite().fill_null(False)
        rows_where(df, bad, path, "not a finite number", col)
        return values.to_numpy().astype(np.float32)  # (N,)

    def loss(self, name: str, class_weights: torch.Tensor | None = None) -> LossFn:
        import torch.nn.functional as F

        return lambda outputs, labels: F.mse_loss(outputs.float().squeeze(-1), labels)

    def probabilities(self, outputs: torch.Tensor) -> torch.Tensor:
        return outputs.float().squeeze(-1)  # (N,) the values themselves

    def predictions(self, probs: np.ndarray, threshold: float) -> np.ndarray:
        return probs.reshape(-1)  # (N,)

    def metrics(self, gold: np.ndarray, probs: np.ndarray, task: TaskConfig) -> dict[str, Any]:
        from twilbert.finetune.metrics import regression_metrics

        return regression_metrics(gold, probs.reshape(-1))

    def selection_metric(self, task: TaskConfig) -> str:
        return "pearson"

    def label_text(self, value: Any, task: TaskConfig) -> str:
        return f"{value:.6g}"

    def class_report_note(self) -> list[str]:
        return ["A regression task has no classes; see metrics.json (mse, mae, pearson).", ""]

    def plot(self, plt: Any, gold: np.ndarray, pred: np.ndarray, task: TaskConfig) -> Any:
        fig, ax = plt.subplots(figsize=(5, 5))
        ax.scatter(gold, pred, s=8, alpha=0.6)
        lo, hi = float(min(gold.min(), pred.min())), float(max(gold.max(), pred.max()))
        ax.plot([lo, hi], [lo, hi], color="grey", linewidth=1)
        ax.set_xlabel("gold")
        ax.set_ylabel("predicted")
        ax.set_title("test: gold vs predicted")
        return fig

    def baseline_grid(self) -> list[dict[str, float]]:
        from twilbert.finetune.baseline_models import ALPHA_GRID

        return [{"alpha": a} for a in ALPHA_GRID]

    def baseline_fit(self, task: TaskConfig, X: Any, labels: np.ndarray, params: dict[str, float], seed: int):
        from sklearn.linear_model import Ridge

        ridge = Ridge(alpha=params["alpha"]).fit(X, labels)
        return lambda X_new: ridge.predict(X_new).astype(np.float64)  # (N,)

    def predict_rows(self, probs: np.ndarray, labels: list[str], threshold: float) -> list[dict[str, Any]]:
        return [{"value": float(v)} for v in probs.reshape(-1)]
