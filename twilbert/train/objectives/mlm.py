"""Masked-LM objective: cross-entropy summed over the MLM targets, normalised by the step's target count.

The model returns logits only at the target positions (sparse prediction, as Cramming); with
``masked_lm.static_targets`` filler rows carry -100 and are ignored. The count comes from the data
pipeline (``n_targets``), so the denominator is known before the forward pass. Unlike the original's
``masked_loss`` (see docs/deviations.md), targets are marked by -100 rather than by label id 0, and the
loss is normalised over the whole step rather than per micro-batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from twilbert.tokens import IGNORE_INDEX
from twilbert.train.objectives.base import Objective, Sums, register


@dataclass
class MLMStats(Sums):
    loss_sum: Any  # Σ CE over the targets
    targets: Any  # real targets (filler rows of a fixed-slot head excluded)
    correct: Any  # targets whose argmax is right
    denominator = "targets"

    def metrics(self) -> dict[str, float]:
        return {"mlm_loss": self.mean_loss(), "mlm_accuracy": self.rate("correct")}

    @classmethod
    def metric_names(cls) -> tuple[str, ...]:
        return ("mlm_loss", "mlm_accuracy")


@register
class MaskedLM(Objective):
    name = "mlm"
    stats_type = MLMStats
    pretraining = True

    @classmethod
    def from_model_config(cls, cfg: Any) -> MaskedLM:
        return cls(cfg.masked_lm.loss_weight)

    def count(self, micro_batch: dict) -> int:
        return micro_batch["n_targets"]

    def loss(self, out: Any, batch: dict) -> tuple[torch.Tensor, MLMStats]:
        # float32 whatever the logits' dtype (bf16 log-softmax over 30k classes loses digits)
        ce = F.cross_entropy(out.mlm_logits.float(), out.mlm_targets, ignore_index=IGNORE_INDEX, reduction="sum")  # (,)
        with torch.no_grad():
            stats = MLMStats(
                ce.detach(),
                (out.mlm_targets != IGNORE_INDEX).sum(),
                (out.mlm_logits.argmax(-1) == out.mlm_targets).sum(),  # filler rows (-100) never match
            )
        return ce, stats


__all__ = ["MLMStats", "MaskedLM"]
