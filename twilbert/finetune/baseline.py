"""A classical baseline for every task: TF-IDF n-grams + a linear model, tuned on dev only.

Why: a fine-tuned score means little alone. Beside every task's model the report shows what a
bag-of-n-grams linear model gets on the same splits, scored by the same :func:`compute_metrics`
(same metric definitions, same selection metric), so "model − baseline" is a fair difference.
The original TWilBERT had no baseline; the recipe is the usual strong one for tweets (word and
character n-grams, e.g. the TASS / HatEval baselines).

The recipe (fixed, documented here, recorded in the result under ``model``):

* **text**: normalised with the project's rules (:func:`normalize_column`, the fine-tuning path's
  normaliser) when ``rules`` is given. A text pair becomes one string ``text + " xxsep " + aux``
  (each side normalised separately, then joined): ``xxsep`` is a word token of its own, so n-grams
  of the two sides stay apart except for the bigrams ``<last word> xxsep`` / ``xxsep <first word>``;
* **features**: a ``FeatureUnion`` of TF-IDF over word 1–2-grams (one-character words kept: Spanish
  "y", "a", "o", "q" matter) and TF-IDF over ``char_wb`` 2–5-grams (min_df 2: a char n-gram seen once
  in train cannot generalise), both with sublinear tf. The vocabulary and idf come from train only;
* **classification** (single- and multi-label): one logistic regression per class, one-vs-rest,
  liblinear's dual solver (seconds on 5k tweets; sklearn's multinomial lbfgs took 10–40 s per fit on
  EmoEvent with 146k features). Single-label probabilities are the per-class sigmoids normalised to
  sum to 1 (sklearn's ``OneVsRestClassifier`` convention), so ``argmax`` is the predicted class;
  multi-label probabilities are the sigmoids, thresholded at the task's ``threshold`` by
  :func:`compute_metrics` as the model's are;
* **class weights**: the task's own, from :func:`twilbert.finetune.data.class_weights` (``ones``,
  ``auto`` = count(majority)/count(c), or a dict), applied as the fine-tuning loss applies them:
  single-label, every example weighs ``w[y_i]`` (weighted cross-entropy); multi-label, the
  positives of label c weigh ``w[c]`` (BCE ``pos_weight``);
* **regression**: ridge regression on the same features, selected on dev Pearson;
* **tuning**: a small grid (:data:`C_GRID` for logistic regression, :data:`ALPHA_GRID` for ridge),
  each value fitted on train and scored on **dev** with :func:`selection_score`; the best dev score
  wins (ties: the earlier grid value, i.e. the stronger regularisation). The test split is read
  only after the choice, and predicted once with the chosen model. Grid selection never sees test:
  :func:`fit_select` is not given it.

Deterministic for a given ``seed`` (liblinear's coordinate order is its ``random_state``; ridge and
TF-IDF are deterministic).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import expit
from sklearn.exceptions import ConvergenceWarning
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import FeatureUnion

from twilbert.finetune.config import TaskConfig
from twilbert.finetune.data import TaskSplit, class_weights, data_counts, load_task, normalize_column
from twilbert.finetune.metrics import compute_metrics, selection_metric, selection_score
from twilbert.text.normalize import EffectiveRules, NormalizeRules

C_GRID = (0.1, 1.0, 10.0)  # logistic regression inverse regularisation, small to large
ALPHA_GRID = (10.0, 1.0, 0.1)  # ridge penalty, strong to weak (ties keep the stronger one)
PAIR_SEPARATOR = " xxsep "
MAX_ITER = 1000
MODEL_NAME = "tfidf(word 1-2 + char_wb 2-5, sublinear) + {}"


# --------------------------------------------------------------------------------------------------
# features


def pair_texts(split: TaskSplit, rules: EffectiveRules | NormalizeRules | None) -> list[str]:
    """The normalised texts of a split; a text pair joined as ``text xxsep aux``."""
    texts = normalize_column(split.texts, rules)
    if split.aux_texts is None:
        return texts
    aux = normalize_column(split.aux_texts, rules)
    return [a + PAIR_SEPARATOR + b for a, b in zip(texts, aux)]


def build_features() -> FeatureUnion:
    word = TfidfVectorizer(analyzer="word", ngram_range=(1, 2), token_pattern=r"(?u)\b\w+\b", sublinear_tf=True)
    char = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), min_df=2, sublinear_tf=True)
    return FeatureUnion([("word", word), ("char", char)])


# --------------------------------------------------------------------------------------------------
# models


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


@dataclass
class FittedBaseline:
    """A fitted feature union and its linear model(s); :meth:`predict` gives what
    :func:`compute_metrics` expects: (N, C) probabilities, or (N,) values for regression."""

    task: TaskConfig
    features: FeatureUnion
    binaries: list[_Binary] | None = None  # classification: one per category index
    ridge: Ridge | None = None

    def predict(self, texts: list[str]) -> np.ndarray:
        X = self.features.transform(texts)
        if self.ridge is not None:
            return self.ridge.predict(X).astype(np.float64)  # (N,)
        scores = np.stack([b.decision(X) for b in self.binaries], axis=1)  # (N, C)
        with np.errstate(over="ignore"):
            p = expit(scores)  # (N, C) per-class sigmoid
        if self.task.multi_label:
            return p
        total = p.sum(1, keepdims=True)  # (N, 1)
        return np.divide(p, total, out=np.full_like(p, 1.0 / p.shape[1]), where=total > 0)  # (N, C), rows sum to 1


def _fit_classifier(task: TaskConfig, features: FeatureUnion, X, y: np.ndarray, weights: np.ndarray, C: float, seed: int) -> FittedBaseline:
    binaries = []
    for c in range(len(task.categories)):
        if task.multi_label:
            yc = y[:, c].astype(np.int64)
            sw = np.where(yc == 1, weights[c], 1.0)  # BCE pos_weight
        else:
            yc = (y == c).astype(np.int64)
            sw = weights[y].astype(np.float64)  # weighted cross-entropy: example i weighs w[y_i]
        binaries.append(_fit_binary(X, yc, sw, C, seed))
    return FittedBaseline(task, features, binaries=binaries)


def _grid(task: TaskConfig) -> list[dict[str, float]]:
    return [{"alpha": a} for a in ALPHA_GRID] if task.regression else [{"C": c} for c in C_GRID]


def fit_select(
    task: TaskConfig, train: TaskSplit, dev: TaskSplit, *, rules: EffectiveRules | NormalizeRules | None = None, seed: int = 0
) -> tuple[FittedBaseline, dict[str, Any]]:
    """Fit every grid value on train, score each on dev, keep the best. Takes no test split, by design.

    Returns the chosen model and ``{"best_params", "dev_selection", "dev_probs", "grid": [{"params",
    "dev_selection"}], "converged"}``.
    """
    features = build_features()
    X = features.fit_transform(pair_texts(train, rules))
    dev_texts = pair_texts(dev, rules)
    weights = None if task.regression else class_weights(task, train.labels)
    best: tuple[float, FittedBaseline, dict, np.ndarray] | None = None
    grid, converged = [], True
    for params in _grid(task):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            if task.regression:
                fitted = FittedBaseline(task, features, ridge=Ridge(alpha=params["alpha"]).fit(X, train.labels))
            else:
                fitted = _fit_classifier(task, features, X, train.labels, weights, params["C"], seed)
        converged &= not any(issubclass(w.category, ConvergenceWarning) for w in caught)
        probs = fitted.predict(dev_texts)
        score = selection_score(compute_metrics(dev.labels, probs, task), task)
        grid.append({"params": params, "dev_selection": score})
        rank = float("-inf") if score != score else score  # NaN never wins
        if best is None or rank > best[0]:  # strict: ties keep the earlier (more regularised) value
            best = (rank, fitted, params, probs)
    assert best is not None  # the grid is not empty
    _, fitted, params, probs = best
    score = next(g["dev_selection"] for g in grid if g["params"] is params)
    return fitted, {"best_params": dict(params), "dev_selection": float(score), "dev_probs": probs, "grid": grid, "converged": converged}


# --------------------------------------------------------------------------------------------------
# the task


def run_baseline(
    task: TaskConfig,
    *,
    rules: EffectiveRules | NormalizeRules | None = None,
    data_root: str | Path | None = None,
    seed: int = 0,
    splits: dict[str, TaskSplit] | None = None,
    name: str | None = None,
) -> dict[str, Any]:
    """Train, tune on dev, evaluate once on test. ``splits`` (from :func:`load_task`) skips reading.

    The splits are those of the fine-tuning run: :func:`load_task` applies the same repeated-id
    quarantine (``task.repeated_ids``), so model and baseline are scored on the same rows; ``data``
    in the result holds the counts (``name`` only labels the stderr warning).

    Returns ``{"model", "selection_metric", "best_params", "dev_selection", "grid", "dev", "test",
    "outputs", "train_examples", "data", "features", "converged", "seconds"}``: ``dev``/``test`` are the full
    :func:`compute_metrics` dicts (per-class tables included); ``outputs`` holds the numpy
    probabilities (``{"dev": ..., "test": ...}``, the arrays the metrics were computed from: not
    JSON, :func:`twilbert.report.build_summary` leaves them out).
    """
    t0 = time.perf_counter()
    splits = splits if splits is not None else load_task(task, data_root, name=name)
    fitted, chosen = fit_select(task, splits["train"], splits["dev"], rules=rules, seed=seed)
    test_probs = fitted.predict(pair_texts(splits["test"], rules))  # the only time test is looked at
    kind = "ridge regression" if task.regression else "logistic regression (one-vs-rest, liblinear)"
    return {
        "model": MODEL_NAME.format(kind),
        "selection_metric": selection_metric(task),
        "best_params": chosen["best_params"],
        "dev_selection": chosen["dev_selection"],
        "grid": chosen["grid"],
        "dev": compute_metrics(splits["dev"].labels, chosen["dev_probs"], task),
        "test": compute_metrics(splits["test"].labels, test_probs, task),
        "outputs": {"dev": chosen["dev_probs"], "test": test_probs},
        "train_examples": len(splits["train"]),
        "data": data_counts(splits),
        "features": sum(len(v.vocabulary_) for _, v in fitted.features.transformer_list),
        "converged": chosen["converged"],
        "seconds": round(time.perf_counter() - t0, 3),
    }


__all__ = ["ALPHA_GRID", "C_GRID", "PAIR_SEPARATOR", "FittedBaseline", "build_features", "fit_select", "pair_texts", "run_baseline"]
