"""MLM / ROP metrics vs sklearn and numpy on the concatenated data."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

from twilbert.train.metrics import PretrainMetrics


def np_mean_ce(logits: np.ndarray, targets: np.ndarray) -> float:
    keep = targets != -100
    x, t = logits[keep].astype(np.float64), targets[keep]
    m = x.max(axis=1, keepdims=True)
    log_z = (m + np.log(np.exp(x - m).sum(axis=1, keepdims=True)))[:, 0]
    return float((log_z - x[np.arange(len(t)), t]).mean())


def random_batches(seed: int, n_batches: int = 7, V: int = 40):
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n_batches):
        N = int(torch.randint(0, 50, (1,), generator=g))  # includes empty batches
        B = int(torch.randint(1, 20, (1,), generator=g))
        # logits biased towards the target so accuracy is far from chance
        targets = torch.randint(0, V, (N,), generator=g)
        logits = torch.randn(N, V, generator=g) + 2.0 * torch.nn.functional.one_hot(targets, V)
        targets[torch.rand(N, generator=g) < 0.1] = -100
        rop_labels = torch.randint(0, 2, (B,), generator=g)
        rop_logits = torch.randn(B, 2, generator=g)
        rop_labels[torch.rand(B, generator=g) < 0.15] = -100
        out.append((logits, targets, rop_logits, rop_labels))
    return out


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_streaming_accumulator_equals_concatenated(seed):
    batches = random_batches(seed)
    acc = PretrainMetrics()
    for logits, targets, rop_logits, rop_labels in batches:
        acc.update(logits, targets, rop_logits, rop_labels)
    got = acc.compute()

    logits = torch.cat([b[0] for b in batches]).numpy()
    targets = torch.cat([b[1] for b in batches]).numpy()
    rop_logits = torch.cat([b[2] for b in batches]).numpy()
    rop_labels = torch.cat([b[3] for b in batches]).numpy()
    keep, rk = targets != -100, rop_labels != -100
    y, p = rop_labels[rk], rop_logits.argmax(-1)[rk]
    assert got["mlm_targets"] == keep.sum() and got["rop_examples"] == rk.sum()
    assert got["mlm_accuracy"] == pytest.approx(accuracy_score(targets[keep], logits.argmax(-1)[keep]))
    assert got["mlm_loss"] == pytest.approx(np_mean_ce(logits, targets), rel=1e-6)
    assert got["mlm_perplexity"] == pytest.approx(math.exp(np_mean_ce(logits, targets)), rel=1e-6)
    assert got["rop_loss"] == pytest.approx(np_mean_ce(rop_logits, rop_labels), rel=1e-6)
    assert got["rop_accuracy"] == pytest.approx(accuracy_score(y, p))
    assert got["rop_f1"] == pytest.approx(f1_score(y, p, zero_division=0))
    assert got["rop_precision"] == pytest.approx(precision_score(y, p, zero_division=0))
    assert got["rop_recall"] == pytest.approx(recall_score(y, p, zero_division=0))


def test_f1_with_no_positive_is_zero_like_sklearn():
    labels = torch.tensor([0, 0, 0])
    logits = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.5, 0.0]])  # predicts class 0 everywhere
    acc = PretrainMetrics()
    acc.update(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), logits, labels)
    got = acc.compute()
    assert got["rop_f1"] == f1_score(labels.numpy(), np.zeros(3, dtype=int), zero_division=0) == 0.0
    assert got["rop_accuracy"] == 1.0


def test_empty_accumulator_is_nan_and_reset_clears():
    acc = PretrainMetrics()
    assert math.isnan(acc.compute()["mlm_accuracy"]) and math.isnan(acc.compute()["rop_f1"])
    logits, targets, rop_logits, rop_labels = random_batches(4, 1)[0]
    acc.update(logits, targets, rop_logits, rop_labels)
    acc.reset()
    assert acc.compute()["mlm_targets"] == 0
    acc.update(logits, targets)  # MLM only
    assert acc.compute()["rop_examples"] == 0 and acc.compute()["mlm_targets"] == int((targets != -100).sum())
