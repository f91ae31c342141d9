"""Reply Order Prediction objective: cross-entropy over the rows with an ROP label, normalised by the
step's labelled-row count (``n_rop`` from the data pipeline). Off (no objective) when
``model.rop.use_rop`` is false."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from twilbert.tokens import IGNORE_INDEX
from twilbert.train.objectives.base import Objective, Sums, register


@dataclass
class ROPStats(Sums):
    loss_sum: Any  # Σ CE over the labelled rows
    rows: Any  # rows with an ROP label (1 = original order, 0 = swapped)
    correct: Any
    denominator = "rows"

    def metrics(self) -> dict[str, float]:
        return {"rop_loss": self.mean_loss(), "rop_accuracy": self.rate("correct")}

    @classmethod
    def metric_names(cls) -> tuple[str, ...]:
        return ("rop_loss", "rop_accuracy")


@register
class ReplyOrder(Objective):
    name = "rop"
    stats_type = ROPStats
    pretraining = True

    @classmethod
    def from_model_config(cls, cfg: Any) -> ReplyOrder | None:
        return cls(cfg.rop.loss_weight) if cfg.rop.use_rop else None

    def count(self, micro_batch: dict) -> int:
        return micro_batch["n_rop"]

    def loss(self, out: Any, batch: dict) -> tuple[torch.Tensor, ROPStats]:
        labels = batch["rop_labels"]  # (B,) -100 = no label
        ce = F.cross_entropy(out.rop_logits.float(), labels, ignore_index=IGNORE_INDEX, reduction="sum")  # (,)
        with torch.no_grad():
            valid = labels != IGNORE_INDEX  # (B,)
            stats = ROPStats(ce.detach(), valid.sum(), ((out.rop_logits.argmax(-1) == labels) & valid).sum())
        return ce, stats


__all__ = ["ROPStats", "ReplyOrder"]
