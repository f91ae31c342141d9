"""Fine-tuning losses against numpy re-implementations of the formulas and hand computations;
class weights; loss/task compatibility."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from twilbert.config import ConfigError
from twilbert.finetune.config import FinetuningConfig, TaskConfig, effective_finetuning
from twilbert.finetune.losses import build_loss, weighted_cross_entropy

EPS = 1e-16


def class_weights(task, train_labels):
    return task.kind.class_weights(task, train_labels)


# numpy twins of utils/finetuning_losses.py (float64), written from the inventory's table
def np_counts(p, y):
    return (y * p).sum(0), ((1 - y) * p).sum(0), (y * (1 - p)).sum(0)


def np_pr_rc(tp, fp, fn):
    return tp / (tp + fp + EPS) + EPS, tp / (tp + fn + EPS) + EPS


def np_f(pr, rc):
    return 2 * pr * rc / (pr + rc)


def np_soft(name, p, y):
    tp, fp, fn = np_counts(p, y)
    pr, rc = np_pr_rc(tp, fp, fn)
    mpr, mrc = np_pr_rc(tp.sum(), fp.sum(), fn.sum())
    return {
        "macro_f1": -np_f(pr, rc).mean(),
        "f1_macro": -np_f(pr.mean(), rc.mean()),
        "micro_f1": -np_f(mpr, mrc),
        "macro_precision": -pr.mean(),
        "macro_recall": -rc.mean(),
        "micro_precision": -mpr,
        "micro_recall": -mrc,
        # batch size from the data (the original divided by 16)
        "jaccard": -np.sum(((y * p).sum(1) + EPS) / (np.maximum(y, p).sum(1) + EPS)) / len(y),
    }[name]


SOFT = ["macro_f1", "f1_macro", "micro_f1", "macro_precision", "macro_recall", "micro_precision", "micro_recall", "jaccard"]


@pytest.mark.parametrize("name", SOFT)
def test_soft_losses_single_label_match_formula(name):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 3, generator=g, dtype=torch.float64)
    labels = torch.tensor([0, 2, 1, 2, 2])
    got = build_loss(name, "single_label")(logits, labels)
    p = torch.softmax(logits, -1).numpy()
    y = np.eye(3)[labels.numpy()]
    assert float(got) == pytest.approx(np_soft(name, p, y), rel=1e-5)
    assert float(got) <= 0.0  # the negative of a metric in [0, 1]
    logits.requires_grad_(True)
    build_loss(name, "single_label")(logits, labels).backward()
    assert torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("name", SOFT)
def test_soft_losses_multi_label_match_formula(name):
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(7, 4, generator=g, dtype=torch.float64)
    labels = (torch.rand(7, 4, generator=g) > 0.5).double()
    got = build_loss(name, "multi_label")(logits, labels)
    p = torch.sigmoid(logits).numpy()
    assert float(got) == pytest.approx(np_soft(name, p, labels.numpy()), rel=1e-5)


def test_soft_jaccard_divides_by_real_batch_size():
    # perfect probabilities -> each example's ratio is 1 -> loss -1 for any batch size (the original's
    # hard-coded /16 gave -5/16 for a batch of 5)
    y = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    logits = torch.where(y > 0, torch.tensor(40.0), torch.tensor(-40.0))
    assert float(build_loss("jaccard", "multi_label")(logits, y)) == pytest.approx(-1.0, abs=1e-6)


def test_weighted_cross_entropy_by_hand():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0], [0.0, 1.0, 3.0]])
    labels = torch.tensor([0, 1, 2])
    w = torch.tensor([1.0, 3.0, 0.5])
    p = torch.softmax(logits, -1)
    ce = -torch.log(p[torch.arange(3), labels])
    # Keras class_weight semantics: mean over examples of w[y] * CE
    expected = float((w[labels] * ce).sum() / 3)
    assert float(weighted_cross_entropy(logits, labels, w)) == pytest.approx(expected, rel=1e-6)
    assert float(build_loss("cross_entropy", "single_label", w)(logits, labels)) == pytest.approx(expected, rel=1e-6)
    assert float(build_loss("cross_entropy", "single_label", None)(logits, labels)) == pytest.approx(float(ce.mean()), rel=1e-6)


def test_bce_pos_weight_by_hand():
    logits = torch.tensor([[1.0, -2.0], [0.3, 0.7]])
    y = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    w = torch.tensor([2.0, 4.0])
    s = torch.sigmoid(logits)
    expected = float((-(w * y * torch.log(s)) - (1 - y) * torch.log(1 - s)).mean())
    assert float(build_loss("bce", "multi_label", w)(logits, y)) == pytest.approx(expected, rel=1e-6)


def test_mse_regression():
    out = torch.tensor([[0.5], [1.5], [-1.0]])
    y = torch.tensor([1.0, 1.0, 0.0])
    assert float(build_loss("mse", "regression")(out, y)) == pytest.approx((0.25 + 0.25 + 1.0) / 3)


def _task(**kw):
    return TaskConfig(train_file="a", dev_file="b", test_file="c", **kw)


def test_class_weights_auto_ones_and_dict():
    t = _task(categories={"N": 0, "NEU": 1, "P": 2}, class_weights="auto")
    labels = np.array([0] * 6 + [1] * 3 + [2] * 2)
    np.testing.assert_allclose(class_weights(t, labels), [1.0, 2.0, 3.0])  # count(majority) / count(c)
    t = _task(categories={"N": 0, "NEU": 1, "P": 2}, class_weights="auto")
    np.testing.assert_allclose(class_weights(t, np.array([0, 0, 0, 0, 1])), [1.0, 4.0, 4.0])  # absent class counts as 1
    np.testing.assert_allclose(class_weights(_task(categories={"a": 0, "b": 1}), np.array([0, 1, 1])), [1.0, 1.0])
    t = _task(categories={"a": 0, "b": 1, "c": 2}, class_weights={"c": 2.5})
    np.testing.assert_allclose(class_weights(t, np.array([0, 1, 2])), [1.0, 1.0, 2.5])
    # multi-label auto: per-label positives (the original ignored auto for multi-label)
    t = _task(categories={"a": 0, "b": 1, "c": 2}, type="multi_label", class_weights="auto")
    y = np.array([[1, 0, 0], [1, 1, 0], [1, 0, 1], [1, 1, 0]], dtype=np.float32)
    np.testing.assert_allclose(class_weights(t, y), [1.0, 2.0, 4.0])


def test_auto_weights_change_cross_entropy_as_by_hand():
    t = _task(categories={"a": 0, "b": 1}, class_weights="auto")
    train_labels = np.array([0, 0, 0, 1])  # weights [1, 3]
    w = torch.from_numpy(class_weights(t, train_labels))
    logits = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    labels = torch.tensor([1, 0])
    ce = -torch.log_softmax(logits, -1)[torch.arange(2), labels]
    expected = float((3.0 * ce[0] + 1.0 * ce[1]) / 2)
    got = build_loss("cross_entropy", "single_label", w)(logits, labels)
    assert float(got) == pytest.approx(expected, rel=1e-6)
    assert float(got) > float(build_loss("cross_entropy", "single_label")(logits, labels))


def test_loss_task_compatibility_names_the_key():
    single = _task(categories={"a": 0, "b": 1})
    multi = _task(categories={"a": 0, "b": 1}, type="multi_label")
    reg = _task(type="regression", eval_metric="pearson")
    with pytest.raises(ConfigError, match=r"^finetuning\.loss: 'mse' does not fit task 't' \(single-label\)"):
        effective_finetuning(FinetuningConfig(loss="mse"), single, "t")
    with pytest.raises(ConfigError, match=r"^finetuning\.loss: 'cross_entropy' does not fit task 't' \(regression\)"):
        effective_finetuning(FinetuningConfig(), reg, "t")
    with pytest.raises(ConfigError, match=r"^finetuning\.loss: 'bce'"):
        effective_finetuning(FinetuningConfig(loss="bce"), single, "t")
    with pytest.raises(ConfigError, match=r"^finetuning\.loss: 'cross_entropy' does not fit task 't' \(multi-label\)"):
        effective_finetuning(FinetuningConfig(), multi, "t")
    # a per-task override names the task's key
    reg_override = _task(type="regression", eval_metric="pearson", finetuning={"loss": "bce"})
    with pytest.raises(ConfigError, match=r"^tasks\.t\.finetuning\.loss: 'bce'"):
        effective_finetuning(FinetuningConfig(), reg_override, "t")
    assert effective_finetuning(FinetuningConfig(loss="bce"), multi, "t").loss == "bce"
    assert effective_finetuning(FinetuningConfig(loss="jaccard"), multi, "t").loss == "jaccard"
    assert effective_finetuning(FinetuningConfig(), _task(type="regression", eval_metric="pearson", finetuning={"loss": "mse"}), "t").loss == "mse"
    # soft-metric losses take no class weights
    with pytest.raises(ConfigError, match=r"^tasks\.t\.class_weights: the soft-metric loss 'macro_f1'"):
        effective_finetuning(FinetuningConfig(loss="macro_f1"), _task(categories={"a": 0, "b": 1}, class_weights="auto"), "t")
