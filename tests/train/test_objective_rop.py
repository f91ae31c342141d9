"""The Reply Order Prediction objective: chosen by ``model.rop.use_rop``, loss and statistics over
labelled rows only."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from tests.train.loss_oracle import masked_cross_entropy
from twilbert.model.config import ModelConfig, ROPConfig
from twilbert.train.objectives import ReplyOrder, ROPStats, pretraining_objectives


@dataclass
class Out:
    rop_logits: torch.Tensor


def test_loss_and_stats_over_labelled_rows():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 2, generator=g)
    labels = torch.tensor([1, 0, -100, 1, -100, 0])
    loss_sum, stats = ReplyOrder().loss(Out(logits), {"rop_labels": labels})
    assert isinstance(stats, ROPStats) and float(stats.rows) == 4
    valid = labels != -100
    assert float(stats.correct) == int(((logits.argmax(-1) == labels) & valid).sum())
    assert float(loss_sum) == pytest.approx(float(masked_cross_entropy(logits, labels)) * 4, rel=1e-6)
    assert set(stats.metrics()) == {"rop_loss", "rop_accuracy"}


def test_disabled_rop_is_no_objective():
    off = ModelConfig(rop=ROPConfig(use_rop=False))
    assert ReplyOrder.from_model_config(off) is None
    assert [o.name for o in pretraining_objectives(off)] == ["mlm"]
    on = ModelConfig(rop=ROPConfig(loss_weight=3.0))
    objs = pretraining_objectives(on)
    assert [o.name for o in objs] == ["mlm", "rop"] and objs[1].weight == 3.0


def test_count_is_the_labelled_rows_of_the_micro_batch():
    assert ReplyOrder().count({"n_rop": 5}) == 5
