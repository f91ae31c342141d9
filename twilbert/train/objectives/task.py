"""Fine-tuning's task loss as an objective: a mean-over-the-batch loss (:mod:`twilbert.finetune.losses`)
whose count is one per micro-batch, so an update back-propagates the mean of its micro-batch means.

Its statistics count only micro-batches with a finite loss: the epoch's training loss is the mean over
those examples, whatever the update guard decided."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from twilbert.train.objectives.base import Objective, Sums, register


@dataclass
class TaskLossStats(Sums):
    loss_sum: Any  # Σ loss · examples over the micro-batches with a finite loss
    examples: Any
    denominator = "examples"

    def metrics(self) -> dict[str, float]:
        return {"loss": self.mean_loss()}

    @classmethod
    def metric_names(cls) -> tuple[str, ...]:
        return ("loss",)


@register
class TaskLoss(Objective):
    name = "task"
    stats_type = TaskLossStats

    def __init__(self, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], weight: float = 1.0) -> None:
        super().__init__(weight)
        self.loss_fn = loss_fn

    def count(self, micro_batch: Any) -> int:
        return 1

    def loss(self, out: torch.Tensor, batch: Any) -> tuple[torch.Tensor, TaskLossStats]:
        loss = self.loss_fn(out, batch.labels)  # (,) mean over the batch
        with torch.no_grad():
            finite = torch.isfinite(loss)
            n = batch.labels.shape[0]
            stats = TaskLossStats(torch.where(finite, loss.detach().double() * n, 0.0), finite.double() * n)
        return loss, stats


__all__ = ["TaskLoss", "TaskLossStats"]
