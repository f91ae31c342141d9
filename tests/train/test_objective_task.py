"""Fine-tuning's task loss as an objective: one count per micro-batch, statistics of finite losses only."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from twilbert.train.objectives import TaskLoss, TaskLossStats


def test_wraps_a_mean_loss_and_counts_one_per_micro_batch():
    obj = TaskLoss(F.cross_entropy)
    out, labels = torch.randn(4, 3), torch.tensor([0, 2, 1, 1])
    loss, stats = obj.loss(out, SimpleNamespace(labels=labels))
    assert torch.equal(loss, F.cross_entropy(out, labels))
    assert obj.count(object()) == 1 and obj.weight == 1.0 and not obj.pretraining
    assert float(stats.examples) == 4 and float(stats.loss_sum) == pytest.approx(float(loss) * 4)


def test_a_non_finite_loss_is_left_out_of_the_statistics():
    obj = TaskLoss(lambda out, labels: out.sum() * float("nan"))
    _, stats = obj.loss(torch.ones(3, 2), SimpleNamespace(labels=torch.zeros(3)))
    assert float(stats.loss_sum) == 0.0 and float(stats.examples) == 0.0
    total = stats + TaskLossStats(torch.tensor(6.0, dtype=torch.float64), torch.tensor(3.0, dtype=torch.float64))
    assert total.mean_loss() == 2.0 and total.metrics() == {"loss": 2.0}
