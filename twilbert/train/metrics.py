"""Pre-training metrics: MLM accuracy / perplexity, ROP accuracy / precision / recall / F1.

A streaming accumulator for evaluation over many batches, :class:`PretrainMetrics`. It keeps *sums* (CE, counts, correct, confusion counts) as device
tensors, so ``update`` never synchronises with the GPU; ``compute`` reads them once at the end. The
results equal the same metric computed on the concatenated data (sklearn for accuracy/F1).

Conventions (shared with the objective): -100 marks "no label" in MLM targets and ROP labels; ROP
class 1 (original order) is the positive class. Perplexity is ``exp(mean CE over MLM targets)``, in
nats, so it is comparable to the training loss (the original logged only ``acc_m`` and ``acc_r``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from twilbert.tokens import IGNORE_INDEX
from twilbert.train.objectives.base import Sums
from twilbert.train.objectives.mlm import MLMStats

if TYPE_CHECKING:
    from twilbert.model.twilbert import TWilBERT


def _valid(targets: torch.Tensor) -> torch.Tensor:
    return targets != IGNORE_INDEX


def f1_from_counts(tp: int, fp: int, fn: int) -> float:
    """F1 of the positive class; 0.0 when undefined (no positives at all), as sklearn's default."""
    denom = 2 * tp + fp + fn
    return 2 * tp / denom if denom else 0.0


@dataclass
class ROPConfusion(Sums):
    """ROP evaluation sums: the summed CE and the confusion counts of class 1 (original order)."""

    loss_sum: Any  # Σ CE over the labelled rows
    tp: Any
    fp: Any
    fn: Any
    tn: Any
    denominator = "rows"

    @property
    def rows(self) -> Any:
        return self.tp + self.fp + self.fn + self.tn


class PretrainMetrics:
    """Streaming sums for MLM and ROP over many batches; ``compute()`` gives the corpus-level values.

    ``update(mlm_logits (N, V), mlm_targets (N,), rop_logits (B, 2) | None, rop_labels (B,) | None)``.
    The sums are the objectives' :class:`MLMStats` and a :class:`ROPConfusion`, as float64 0-dim tensors.
    """

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.reset()

    def reset(self) -> None:
        # float64 sums: 1e8 targets summed in float32 would lose the CE's low digits.
        self.mlm = MLMStats.zeros(self.device)
        self.rop = ROPConfusion.zeros(self.device)

    @torch.no_grad()
    def update(
        self,
        mlm_logits: torch.Tensor | None,
        mlm_targets: torch.Tensor | None,
        rop_logits: torch.Tensor | None = None,
        rop_labels: torch.Tensor | None = None,
    ) -> None:
        if mlm_logits is not None and mlm_targets is not None and mlm_targets.numel() > 0:
            valid = _valid(mlm_targets)  # (N,)
            ce = F.cross_entropy(mlm_logits.float(), mlm_targets, ignore_index=IGNORE_INDEX, reduction="sum")
            correct = (mlm_logits.argmax(dim=-1) == mlm_targets) & valid  # (N,)
            self.mlm = self.mlm + self._on_device(MLMStats(ce.double(), valid.sum(), correct.sum()))
        if rop_logits is not None and rop_labels is not None and rop_labels.numel() > 0:
            valid = _valid(rop_labels)  # (B,)
            ce = F.cross_entropy(rop_logits.float(), rop_labels, ignore_index=IGNORE_INDEX, reduction="sum")
            p = rop_logits.argmax(dim=-1) == 1  # (B,)
            y = rop_labels == 1  # (B,)
            batch = ROPConfusion(ce.double(), (p & y & valid).sum(), (p & ~y & valid).sum(), (~p & y & valid).sum(), (~p & ~y & valid).sum())
            self.rop = self.rop + self._on_device(batch)

    def _on_device(self, sums: Sums) -> Sums:
        return type(sums)(*[v.to(self.device, torch.float64) for v in sums.values()])

    def compute(self) -> dict[str, float]:
        """Corpus-level metrics; NaN for a head that saw no labels."""
        host = torch.stack(self.mlm.values() + self.rop.values()).tolist()  # the one read of the sums
        n_fields = len(self.mlm.values())
        mlm = MLMStats.from_values(host[:n_fields])
        rop = ROPConfusion.from_values(host[n_fields:])
        n_mlm = int(mlm.targets)
        tp, fp, fn, tn = int(rop.tp), int(rop.fp), int(rop.fn), int(rop.tn)
        n_rop = int(rop.rows)
        nan = math.nan
        mlm_loss = mlm.loss_sum / n_mlm if n_mlm else nan
        return {
            "mlm_loss": mlm_loss,
            "mlm_perplexity": math.exp(mlm_loss) if n_mlm else nan,
            "mlm_accuracy": mlm.correct / n_mlm if n_mlm else nan,
            "mlm_targets": n_mlm,
            "rop_loss": rop.loss_sum / n_rop if n_rop else nan,
            "rop_accuracy": (tp + tn) / n_rop if n_rop else nan,
            "rop_precision": tp / (tp + fp) if tp + fp else 0.0,
            "rop_recall": tp / (tp + fn) if tp + fn else 0.0,
            "rop_f1": f1_from_counts(tp, fp, fn) if n_rop else nan,
            "rop_examples": n_rop,
        }


def useful_mfu(
    model: TWilBERT,
    *,
    tokens: float,
    sum_sq_lengths: float,
    mlm_targets: float,
    seconds: float,
    world_size: int,
    peak_flops: float,
) -> float:
    """Model FLOPs utilisation per device of ``tokens`` processed in ``seconds`` (all ranks together).

    nanoGPT's per-token ``6 N + 12 L (A d_k) T`` (:meth:`TWilBERT.estimate_flops_per_token`: ``N`` counts
    a shared block once per layer it runs in, i.e. the unshared model). The attention term is per token
    at its own sequence's length, so over a set of sequences of lengths ``t_i`` it sums to
    ``12 L (A d_k) Σ t_i²``: ``T`` is the token-weighted mean length ``Σ t_i² / Σ t_i`` (exact). The MLM
    head runs at the targets only: its share is ``mlm_targets / tokens``. Pass real tokens and real
    lengths for useful work (``mfu``), or every computed position and the padded lengths (``mfu_padded``).
    (The tiny ROP head, once per sequence, is weighted by ``1 / T`` with this ``T``: a slight under-count.)
    """
    if tokens <= 0 or seconds <= 0:
        return math.nan
    seq_len = sum_sq_lengths / tokens
    per_token = model.estimate_flops_per_token(seq_len, mlm_fraction=mlm_targets / tokens)
    return per_token * tokens / seconds / world_size / peak_flops


__all__ = [
    "PretrainMetrics",
    "ROPConfusion",
    "f1_from_counts",
    "useful_mfu",
]
