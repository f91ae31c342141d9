"""A classical baseline for every task: TF-IDF n-grams + a linear model, tuned on dev only.

A fine-tuned score means little alone: beside every task's model the report shows what a
bag-of-n-grams linear model gets on the same splits, scored by the same :func:`compute_metrics`, so
"model − baseline" is a fair difference (the original TWilBERT had no baseline). The recipe is fixed
and recorded in the result under ``model``:

* **text**: two forms, the texts as read (``raw``) and normalised with the project's rules
  (``normalized``, only when ``rules`` is given); a text pair becomes ``text + " xxsep " + aux``
  (``xxsep`` is a word of its own, so the two sides' n-grams stay apart). Normalising erases what
  can carry the label (``@pepe`` and ``@juan`` both become ``user``): the form is a knob like C;
* **features**: TF-IDF over word 1–2-grams (one-character words kept: Spanish "y", "a", "o" matter)
  and over ``char_wb`` 2–5-grams (min_df 2), sublinear tf, vocabulary and idf from train only, one
  feature union per text form;
* **model**: the task type's (``baseline_fit``): one-vs-rest logistic regressions (liblinear's dual
  solver: seconds on 5k tweets, where multinomial lbfgs took 10–40 s per fit) weighted as the
  fine-tuning loss weighs examples, or ridge regression;
* **tuning**: each text form × each value of the type's grid (:data:`C_GRID`, :data:`ALPHA_GRID`)
  is fitted on train and scored on **dev** with :func:`selection_score`; the best wins (ties: the
  normalised form, then the earlier, more regularised value). Test is predicted once, with the
  chosen model and form: :func:`fit_select` never sees it.

Deterministic for a given ``seed`` (liblinear's coordinate order is its ``random_state``; ridge and
TF-IDF are deterministic).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.pipeline import FeatureUnion

from twilbert.finetune.baseline_models import ALPHA_GRID, C_GRID
from twilbert.finetune.config import TaskConfig
from twilbert.finetune.data import TaskSplit, data_counts, load_task
from twilbert.finetune.inputs import normalize_column
from twilbert.finetune.metrics import compute_metrics, selection_metric, selection_score
from twilbert.text.normalize import EffectiveRules, NormalizeRules

PAIR_SEPARATOR = " xxsep "
MODEL_NAME = "tfidf(word 1-2 + char_wb 2-5, sublinear) on {} text + {}"
# Ties keep the normalised form: it is what the fine-tuned model reads, so the baseline leaves it only when dev says so.
TEXT_FORMS = ("normalized", "raw")

Rules = EffectiveRules | NormalizeRules | None


# --------------------------------------------------------------------------------------------------
# features


def pair_texts(split: TaskSplit, rules: Rules) -> list[str]:
    """The texts of a split, normalised when ``rules`` is given; a text pair joined as ``text xxsep aux``."""
    texts = normalize_column(split.texts, rules)
    if split.aux_texts is None:
        return texts
    aux = normalize_column(split.aux_texts, rules)
    return [a + PAIR_SEPARATOR + b for a, b in zip(texts, aux)]


def text_forms(rules: Rules, forms: tuple[str, ...] = TEXT_FORMS) -> list[tuple[str, Rules]]:
    """``(form, rules to apply)`` in tie order; without ``rules`` only ``raw`` exists (no duplicate fit)."""
    unknown = [f for f in forms if f not in TEXT_FORMS]
    if unknown or not forms:
        raise ValueError(f"text_forms: {unknown or 'empty'}: each must be one of {list(TEXT_FORMS)}")
    if rules is None and "raw" not in forms:
        raise ValueError("text_forms: 'normalized' needs normalisation rules (rules=None gives raw text only)")
    available = {"normalized": rules, "raw": None} if rules is not None else {"raw": None}
    return [(f, available[f]) for f in TEXT_FORMS if f in forms and f in available]


def build_features() -> FeatureUnion:
    word = TfidfVectorizer(analyzer="word", ngram_range=(1, 2), token_pattern=r"(?u)\b\w+\b", sublinear_tf=True)
    char = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), min_df=2, sublinear_tf=True)
    return FeatureUnion([("word", word), ("char", char)])


# --------------------------------------------------------------------------------------------------
# fitting and choosing


@dataclass
class FittedBaseline:
    """A fitted feature union and the type's model on top, for one text form; :meth:`predict` gives
    what :func:`compute_metrics` expects: (N, C) probabilities, or (N,) values for regression."""

    task: TaskConfig
    features: FeatureUnion
    model: Callable[[Any], np.ndarray]  # features -> probabilities (TaskType.baseline_fit)
    text: str = "raw"  # the text form, one of TEXT_FORMS
    rules: Rules = None  # the rules that make that form (None: raw)

    def texts(self, split: TaskSplit) -> list[str]:
        """The split in this model's text form."""
        return pair_texts(split, self.rules)

    def predict(self, texts: list[str]) -> np.ndarray:
        return self.model(self.features.transform(texts))


def fit_select(
    task: TaskConfig, train: TaskSplit, dev: TaskSplit, *, rules: Rules = None, seed: int = 0,
    forms: tuple[str, ...] = TEXT_FORMS,
) -> tuple[FittedBaseline, dict[str, Any]]:
    """Fit every text form × grid value on train, score each on dev, keep the best. Takes no test
    split, by design. ``forms`` narrows the text forms tried (:func:`text_forms`).

    Returns the chosen model and ``{"best_params", "dev_selection", "dev_probs", "grid": [{"params",
    "dev_selection"}], "converged"}``; every ``params`` names its text form (``{"text": ..., "C": ...}``).
    """
    best: tuple[float, FittedBaseline, dict, np.ndarray] | None = None
    grid, converged = [], True
    for form, form_rules in text_forms(rules, forms):
        features = build_features()  # vocabulary and idf of this form's train texts
        X = features.fit_transform(pair_texts(train, form_rules))
        dev_texts = pair_texts(dev, form_rules)
        for params in task.kind.baseline_grid():
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", ConvergenceWarning)
                model = task.kind.baseline_fit(task, X, train.labels, params, seed)
            converged &= not any(issubclass(w.category, ConvergenceWarning) for w in caught)
            fitted = FittedBaseline(task, features, model, form, form_rules)
            probs = fitted.predict(dev_texts)
            score = selection_score(compute_metrics(dev.labels, probs, task), task)
            choice = {"text": form, **params}
            grid.append({"params": choice, "dev_selection": score})
            rank = float("-inf") if score != score else score  # NaN never wins
            if best is None or rank > best[0]:  # strict: ties keep the normalised form, then the more regularised value
                best = (rank, fitted, choice, probs)
    assert best is not None  # the grid is not empty
    _, fitted, choice, probs = best
    score = next(g["dev_selection"] for g in grid if g["params"] is choice)
    return fitted, {"best_params": dict(choice), "dev_selection": float(score), "dev_probs": probs, "grid": grid, "converged": converged}


# --------------------------------------------------------------------------------------------------
# the task


def run_baseline(
    task: TaskConfig,
    *,
    rules: Rules = None,
    data_root: str | Path | None = None,
    seed: int = 0,
    splits: dict[str, TaskSplit] | None = None,
    name: str | None = None,
    forms: tuple[str, ...] = TEXT_FORMS,
) -> dict[str, Any]:
    """Train, tune on dev (text form and grid, :func:`fit_select`), evaluate once on test. ``splits``
    (from :func:`load_task`) skips reading.

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
    fitted, chosen = fit_select(task, splits["train"], splits["dev"], rules=rules, seed=seed, forms=forms)
    test_probs = fitted.predict(fitted.texts(splits["test"]))  # the only time test is looked at, in the chosen form
    return {
        "model": MODEL_NAME.format(fitted.text, task.kind.baseline_model),
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


__all__ = ["ALPHA_GRID", "C_GRID", "PAIR_SEPARATOR", "TEXT_FORMS", "FittedBaseline", "build_features", "fit_select", "pair_texts",
           "run_baseline", "text_forms"]
