"""Fine-tuning metrics and dev selection, checked against scikit-learn / scipy / hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import pearsonr
from sklearn.metrics import classification_report, f1_score, precision_score, recall_score

from twilbert.config import ConfigError
from twilbert.finetune.config import TaskConfig
from twilbert.finetune.metrics import (
    BestTracker,
    compute_metrics,
    pearson,
    selection_metric,
    selection_score,
    stance_f1,
)


def task(**kw) -> TaskConfig:
    base = dict(train_file="a", dev_file="b", test_file="c", categories={"AGAINST": 0, "NEUTRAL": 1, "FAVOR": 2})
    return TaskConfig(**{**base, **kw})


GOLD = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 1])
PRED = np.array([0, 1, 2, 1, 1, 2, 0, 2, 2, 0])


def onehot_probs(pred: np.ndarray, c: int) -> np.ndarray:
    p = np.full((len(pred), c), 0.1)
    p[np.arange(len(pred)), pred] = 0.8
    return p


def test_single_label_metrics_match_sklearn():
    m = compute_metrics(GOLD, onehot_probs(PRED, 3), task())
    assert m["accuracy"] == pytest.approx(np.mean(GOLD == PRED))
    for avg in ("macro", "micro", "weighted"):
        assert m[f"f1_{avg}"] == pytest.approx(f1_score(GOLD, PRED, average=avg))
        assert m[f"precision_{avg}"] == pytest.approx(precision_score(GOLD, PRED, average=avg))
        assert m[f"recall_{avg}"] == pytest.approx(recall_score(GOLD, PRED, average=avg))
    rep = classification_report(GOLD, PRED, output_dict=True, zero_division=0)
    for i, label in enumerate(["AGAINST", "NEUTRAL", "FAVOR"]):
        assert m["per_class"][label]["f1"] == pytest.approx(rep[str(i)]["f1-score"])
        assert m["per_class"][label]["support"] == rep[str(i)]["support"]
    # No pearson for unordered classes: AGAINST=0 < NEUTRAL=1 < FAVOR=2 would be an arbitrary order.
    assert "pearson" not in m
    # Declared ordinal, the correlation of class indices (the original's meaning), checked with scipy.
    ordered = compute_metrics(GOLD, onehot_probs(PRED, 3), task(ordinal=True))
    assert ordered["pearson"] == pytest.approx(pearsonr(GOLD, PRED)[0])
    assert {k: v for k, v in ordered.items() if k != "pearson"} == m


def test_stance_f1_is_mean_f1_of_named_classes_by_hand():
    # AGAINST (0): tp=1 (row 0), fp=2 (rows 6, 9), fn=2 (rows 1, 2) -> P 1/3, R 1/3, F1 1/3
    # FAVOR (2): tp=3 (5, 7, 8), fp=1 (row 2), fn=1 (row 6) -> P 3/4, R 3/4, F1 3/4
    expected = (1 / 3 + 3 / 4) / 2
    assert stance_f1(GOLD, PRED, [0, 2]) == pytest.approx(expected)
    t = task(stance_f1=("AGAINST", "FAVOR"))
    m = compute_metrics(GOLD, onehot_probs(PRED, 3), t)
    assert m["stance_f1"] == pytest.approx(expected)
    assert selection_metric(t) == "stance_f1"
    assert selection_score(m, t) == pytest.approx(expected)
    # robust where the original's text parsing broke: a class absent from gold and predictions
    assert stance_f1(np.array([0, 0, 2]), np.array([0, 2, 2]), [0, 1, 2]) == pytest.approx((2 / 3 + 0 + 2 / 3) / 3)


def test_class_metric_zero_selects_class_zero():
    t = task(class_metric=0, eval_metric="f1")
    m = compute_metrics(GOLD, onehot_probs(PRED, 3), t)
    assert selection_metric(t) == "per_class.AGAINST.f1"
    assert selection_score(m, t) == pytest.approx(1 / 3)  # class 0's F1, not the macro F1
    assert selection_score(m, t) != pytest.approx(m["f1_macro"])
    t2 = task(class_metric=2, eval_metric="recall", average_metric="none")
    assert selection_score(m, t2) == pytest.approx(3 / 4)
    # class_metric wins over stance_f1 (both set: the params test of the lead loads such a task)
    t3 = task(class_metric=0, stance_f1=("AGAINST", "FAVOR"))
    assert selection_score(compute_metrics(GOLD, onehot_probs(PRED, 3), t3), t3) == pytest.approx(1 / 3)


def test_selection_by_average_and_accuracy():
    m = compute_metrics(GOLD, onehot_probs(PRED, 3), task())
    assert selection_score(m, task()) == pytest.approx(f1_score(GOLD, PRED, average="macro"))
    t = task(eval_metric="precision", average_metric="weighted")
    assert selection_score(m, t) == pytest.approx(precision_score(GOLD, PRED, average="weighted"))
    assert selection_score(m, task(eval_metric="accuracy")) == pytest.approx(0.6)


def test_selection_config_errors():
    with pytest.raises(ConfigError, match="average_metric: 'none'"):
        task(average_metric="none")
    with pytest.raises(ConfigError, match="class_metric: selects one class"):
        task(class_metric=1, eval_metric="accuracy")
    with pytest.raises(ConfigError, match="class_metric: not a category index"):
        task(class_metric=3)
    with pytest.raises(ConfigError, match="eval_metric: a regression task selects on pearson"):
        TaskConfig(train_file="a", dev_file="b", test_file="c", type="regression")
    with pytest.raises(ConfigError, match="pearson is not defined for a multi-label"):
        task(type="multi_label", eval_metric="pearson")
    with pytest.raises(ConfigError, match="eval_metric: pearson of class indices is meaningful only for ordered classes"):
        task(eval_metric="pearson")
    assert selection_metric(task(eval_metric="pearson", ordinal=True)) == "pearson"
    with pytest.raises(ConfigError, match="ordinal: a multi-label task has no ordered classes"):
        task(type="multi_label", ordinal=True, eval_metric="accuracy")
    with pytest.raises(ConfigError, match="ordinal: is for classification tasks"):
        TaskConfig(train_file="a", dev_file="b", test_file="c", type="regression", eval_metric="pearson", ordinal=True)


def test_multi_label_thresholded_jaccard_by_hand():
    t = TaskConfig(train_file="a", dev_file="b", test_file="c", categories={"a": 0, "b": 1, "c": 2}, type="multi_label",
                   threshold=0.4, eval_metric="accuracy")
    gold = np.array([[1, 0, 1], [0, 1, 0], [0, 0, 0], [1, 1, 1]])
    probs = np.array([[0.9, 0.5, 0.1], [0.2, 0.39, 0.41], [0.1, 0.2, 0.3], [0.45, 0.6, 0.4]])
    # thresholded at 0.4: [1,1,0], [0,0,1], [0,0,0], [1,1,1]
    # |G∩P|/|G∪P|: 1/3, 0/2, empty/empty = 1, 3/3
    expected = (1 / 3 + 0 + 1 + 1) / 4
    m = compute_metrics(gold, probs, t)
    assert m["accuracy"] == pytest.approx(expected) and m["jaccard"] == pytest.approx(expected)
    assert selection_score(m, t) == pytest.approx(expected)
    assert m["subset_accuracy"] == pytest.approx(2 / 4)
    pred = (probs >= 0.4).astype(int)
    assert m["f1_micro"] == pytest.approx(f1_score(gold, pred, average="micro"))
    assert m["f1_macro"] == pytest.approx(f1_score(gold, pred, average="macro", zero_division=0))
    # per label "b": gold b in rows 1, 3; predicted b in rows 0, 3 -> P 1/2, R 1/2
    assert m["per_class"]["b"]["precision"] == pytest.approx(0.5) and m["per_class"]["b"]["recall"] == pytest.approx(0.5)
    # not the original's soft Jaccard on raw probabilities
    soft = np.mean((gold * probs).sum(1) / np.maximum(gold, probs).sum(1).clip(1e-16))
    assert not math.isclose(m["accuracy"], soft)


def test_multi_label_stance_f1_is_the_mean_binary_f1_of_the_named_labels_by_hand():
    # B1: selecting a multi-label task on stance_f1 raised KeyError after epoch 1
    t = TaskConfig(train_file="a", dev_file="b", test_file="c", categories={"a": 0, "b": 1, "c": 2}, type="multi_label", stance_f1=("a", "c"))
    gold = np.array([[1, 0, 1], [0, 1, 0], [1, 0, 0], [1, 1, 1]])
    probs = np.array([[0.9, 0.5, 0.1], [0.2, 0.3, 0.7], [0.6, 0.2, 0.3], [0.1, 0.6, 0.8]])
    # label a: gold rows 0, 2, 3; predicted 0, 2 -> P 1, R 2/3, F1 0.8
    # label c: gold rows 0, 3; predicted 1, 3 -> P 1/2, R 1/2, F1 0.5
    m = compute_metrics(gold, probs, t)
    assert selection_metric(t) == "stance_f1"
    assert m["stance_f1"] == pytest.approx((0.8 + 0.5) / 2) and selection_score(m, t) == pytest.approx(0.65)


def test_regression_metrics():
    t = TaskConfig(train_file="a", dev_file="b", test_file="c", type="regression", eval_metric="pearson")
    gold = np.array([0.1, 0.5, 0.9, 0.3, 0.7])
    pred = np.array([0.2, 0.4, 0.8, 0.5, 0.6])
    m = compute_metrics(gold, pred[:, None], t)
    assert m["mse"] == pytest.approx(np.mean((gold - pred) ** 2))
    assert m["mae"] == pytest.approx(np.mean(np.abs(gold - pred)))
    assert m["pearson"] == pytest.approx(pearsonr(gold, pred)[0])
    assert selection_score(m, t) == pytest.approx(m["pearson"])
    assert pearson(gold, np.full(5, 0.3)) == 0.0  # constant predictions: 0, not NaN


def test_best_tracker_scripted_scores():
    # ties keep the earlier epoch; strictly greater wins; patience counts epochs since the best
    tr = BestTracker(patience=2)
    script = [0.50, 0.70, 0.70, 0.80, 0.80, 0.79, 0.99]  # 0.99 never seen: stopped before
    improved, stopped_after = [], None
    for epoch, s in enumerate(script, start=1):
        improved.append(tr.update(s, epoch))
        if tr.should_stop:
            stopped_after = epoch
            break
    assert improved == [True, True, False, True, False, False]
    assert tr.best_epoch == 4 and tr.best_score == 0.80
    assert stopped_after == 6
    # without patience every epoch runs; NaN never wins but the first epoch is always a best
    tr = BestTracker(patience=0)
    assert tr.update(float("nan"), 1) is True
    assert tr.update(0.1, 2) is True
    assert tr.update(float("nan"), 3) is False
    assert not tr.should_stop and tr.best_epoch == 2
    # patience 1 stops right after the first non-improving epoch
    tr = BestTracker(patience=1)
    tr.update(0.3, 1)
    tr.update(0.3, 2)
    assert tr.should_stop and tr.best_epoch == 1
