"""The masked-LM objective: its summed loss, count and named statistics against the loss oracle."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from tests.train.loss_oracle import masked_cross_entropy
from twilbert.model.config import MaskedLMConfig, ModelConfig
from twilbert.train.objectives import MaskedLM, MLMStats


@dataclass
class Out:
    mlm_logits: torch.Tensor
    mlm_targets: torch.Tensor


def test_loss_is_the_summed_ce_and_stats_name_targets_and_correct():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(9, 20, generator=g)
    targets = torch.randint(0, 20, (9,), generator=g)
    targets[[2, 7]] = -100  # filler rows of a fixed-slot head
    targets[0] = int(logits[0].argmax())  # one right guess at least
    loss_sum, stats = MaskedLM().loss(Out(logits, targets), {})
    assert isinstance(stats, MLMStats)
    assert float(stats.targets) == 7
    assert float(stats.correct) == int(((logits.argmax(-1) == targets) & (targets != -100)).sum())
    assert float(loss_sum) == pytest.approx(float(masked_cross_entropy(logits, targets)) * 7, rel=1e-6)
    assert stats.metrics()["mlm_loss"] == pytest.approx(float(loss_sum) / 7)
    assert stats.metrics()["mlm_accuracy"] == float(stats.correct) / 7


def test_bf16_logits_are_scored_in_float32():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(5, 300, generator=g).bfloat16()
    targets = torch.randint(0, 300, (5,), generator=g)
    loss_sum, _ = MaskedLM().loss(Out(logits, targets), {})
    assert loss_sum.dtype == torch.float32


def test_count_weight_and_config():
    mlm = MaskedLM.from_model_config(ModelConfig(masked_lm=MaskedLMConfig(loss_weight=0.25)))
    assert mlm.weight == 0.25 and mlm.count({"n_targets": 13}) == 13 and mlm.name == "mlm"


def test_no_targets_gives_nan_metrics_not_an_error():
    stats = MLMStats(0.0, 0.0, 0.0)
    assert all(v != v for v in stats.metrics().values())  # NaN
