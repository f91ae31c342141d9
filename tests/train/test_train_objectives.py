"""Pre-training loss vs hand computation (log-softmax gathered by hand)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch

from tests.train.loss_oracle import LossParts, pretraining_loss
from twilbert.model.config import MaskedLMConfig, ModelConfig, ROPConfig


@dataclass
class FakeOutput:  # the fields of the model's PretrainOutput the loss reads
    mlm_logits: torch.Tensor
    mlm_targets: torch.Tensor
    rop_logits: torch.Tensor | None


def hand_ce(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """Mean over labelled rows of -log softmax(logits)[target], in float64 with plain loops."""
    terms = []
    for row, t in zip(logits.double().tolist(), targets.tolist()):
        if t == -100:
            continue
        m = max(row)
        log_z = m + math.log(sum(math.exp(x - m) for x in row))
        terms.append(log_z - row[t])
    return sum(terms) / len(terms)


def cfg(mlm_w=1.0, rop_w=1.0, use_rop=True) -> ModelConfig:
    return ModelConfig(masked_lm=MaskedLMConfig(loss_weight=mlm_w), rop=ROPConfig(use_rop=use_rop, loss_weight=rop_w))


def test_weighted_total_matches_hand_computation():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(37, 50, generator=g, requires_grad=True)
    targets = torch.randint(0, 50, (37,), generator=g)
    rop_logits = torch.randn(8, 2, generator=g, requires_grad=True)
    rop_labels = torch.tensor([1, 0, -100, 1, 1, 0, -100, 0])
    parts = pretraining_loss(FakeOutput(logits, targets, rop_logits), targets, rop_labels, cfg(0.5, 2.0))
    assert isinstance(parts, LossParts)
    mlm, rop = hand_ce(logits.detach(), targets), hand_ce(rop_logits.detach(), rop_labels)
    assert parts.mlm.item() == pytest.approx(mlm, rel=1e-5)
    assert parts.rop.item() == pytest.approx(rop, rel=1e-5)
    assert parts.total.item() == pytest.approx(0.5 * mlm + 2.0 * rop, rel=1e-5)
    parts.total.backward()
    assert rop_logits.grad[2].abs().sum() == 0 and rop_logits.grad[0].abs().sum() > 0  # unlabelled rows ignored


def test_mlm_targets_default_to_the_output_and_ignore_minus_100():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(10, 20, generator=g)
    targets = torch.randint(0, 20, (10,), generator=g)
    targets[[2, 5]] = -100
    parts = pretraining_loss(FakeOutput(logits, targets, None), None, None, cfg())
    assert parts.mlm.item() == pytest.approx(hand_ce(logits, targets), rel=1e-5)


@pytest.mark.parametrize("case", ["rop-disabled", "no-rop-logits", "all-unlabelled", "no-labels"])
def test_mlm_only(case):
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(12, 30, generator=g)
    targets = torch.randint(0, 30, (12,), generator=g)
    rop_logits = None if case == "no-rop-logits" else torch.randn(4, 2, generator=g)
    labels = None if case == "no-labels" else (torch.full((4,), -100) if case == "all-unlabelled" else torch.tensor([1, 0, 1, 0]))
    parts = pretraining_loss(FakeOutput(logits, targets, rop_logits), targets, labels, cfg(1.5, 3.0, use_rop=case != "rop-disabled"))
    assert parts.rop.item() == 0.0
    assert parts.total.item() == pytest.approx(1.5 * hand_ce(logits, targets), rel=1e-5)


def test_zero_targets_give_zero_not_nan_and_backward_works():
    logits = torch.randn(0, 30, requires_grad=True)  # sparse prediction with no target in the batch
    rop_logits = torch.randn(3, 2, requires_grad=True)
    parts = pretraining_loss(FakeOutput(logits, torch.zeros(0, dtype=torch.long), rop_logits), None, torch.full((3,), -100), cfg())
    assert parts.total.item() == 0.0 and not torch.isnan(parts.total)
    parts.total.backward()
    assert torch.equal(rop_logits.grad, torch.zeros(3, 2))


def test_low_precision_logits_are_computed_in_float32():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(64, 3000, generator=g) * 4
    targets = torch.randint(0, 3000, (64,), generator=g)
    parts = pretraining_loss(FakeOutput(logits.bfloat16(), targets, None), None, None, cfg())
    assert parts.mlm.dtype == torch.float32
    assert parts.mlm.item() == pytest.approx(hand_ce(logits.bfloat16().float(), targets), rel=1e-5)
