"""The classical baseline's estimators and their grids; each task type picks one (``baseline_fit``).

Kept apart from :mod:`twilbert.finetune.baseline` (features, tuning, the report entry) so that the
task types, which fine-tuning imports, do not depend on the baseline's recipe. Logistic regressions
use liblinear's dual solver (seconds on 5k tweets, where multinomial lbfgs took 10–40 s per fit);
ridge regression is deterministic.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import expit
from sklearn.linear_model import LogisticRegression

C_GRID = (0.1, 1.0, 10.0)  # logistic regression inverse regularisation, small to large
ALPHA_GRID = (10.0, 1.0, 0.1)  # ridge penalty, strong to weak (ties keep the stronger one)
MAX_ITER = 1000


@dataclass
class _Binary:
    """One logistic regression, or a constant score when train holds only one class for it."""

    model: LogisticRegression | None
    constant: float  # decision value used when model is None

    def decision(self, X) -> np.ndarray:
        if self.model is None:
            return np.full(X.shape[0], self.constant)
        return self.model.decision_function(X)  # (N,)


def _fit_binary(X, y: np.ndarray, sample_weight: np.ndarray, C: float, seed: int) -> _Binary:
    if y.min() == y.max():
        # a class absent from train (or a multi-label label always on): a constant, no fit possible.
        # -inf / +inf give probability 0 / 1 (single-label: never predicted unless all are absent).
        return _Binary(None, float("inf") if y[0] == 1 else float("-inf"))
    model = LogisticRegression(C=C, solver="liblinear", dual=True, max_iter=MAX_ITER, random_state=seed)
    return _Binary(model.fit(X, y, sample_weight=sample_weight), 0.0)


def fit_one_vs_rest(X, targets: list[tuple[np.ndarray, np.ndarray]], C: float, seed: int) -> Callable[[Any], np.ndarray]:
    """One logistic regression per ``(y_c, sample_weight_c)`` of ``targets``; returns ``predict(X)``:
    the (N, C) per-class sigmoids."""
    binaries = [_fit_binary(X, y, sw, C, seed) for y, sw in targets]

    def predict(X_new) -> np.ndarray:
        scores = np.stack([b.decision(X_new) for b in binaries], axis=1)  # (N, C)
        with np.errstate(over="ignore"):
            return expit(scores)  # (N, C) per-class sigmoid

    return predict


__all__ = ["ALPHA_GRID", "C_GRID", "MAX_ITER", "fit_one_vs_rest"]
