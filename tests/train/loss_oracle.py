"""Test oracle: the pre-training loss written directly (masked-LM + Reply Order Prediction mean CE),
against which the objective components and the trainer's step are checked.

The model returns MLM logits only at the target positions (sparse prediction, as Cramming), so the
MLM loss is a plain mean cross-entropy over ``N`` rows; -100 targets (if any) are ignored.

Differences from the original ``masked_loss`` (see docs/deviations.md):
* targets are marked by -100 on non-targets rather than by label id 0, so nothing relies on
  ``[PAD]`` having id 0;
* with zero targets (or zero ROP labels) the term is exactly 0 instead of ``0 / (0 + K.epsilon())``,
  and it stays attached to the graph, so ``backward()`` and DDP see every head;
* the total is ``masked_lm.loss_weight · L_mlm + rop.loss_weight · L_rop`` (both 1 in the original).
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

import torch
import torch.nn.functional as F

from twilbert.model.config import ModelConfig
from twilbert.tokens import IGNORE_INDEX


class PretrainOutputLike(Protocol):
    """What the loss reads from the model's ``PretrainOutput``."""

    mlm_logits: torch.Tensor  # (N, V) logits at the MLM targets, row-major order
    mlm_targets: torch.Tensor  # (N,) target ids; -100 on the filler rows of a fixed-slot head (mlm_slots)
    rop_logits: torch.Tensor | None  # (B, 2), or None without the ROP head


class LossParts(NamedTuple):
    total: torch.Tensor  # scalar, what backward() is called on
    mlm: torch.Tensor  # scalar, mean CE over MLM targets (0 when there are none)
    rop: torch.Tensor  # scalar, mean CE over labelled rows (0 without ROP or labels)


def masked_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean CE over rows whose target is not -100; an exact, graph-attached 0 when there are none.

    Computed in float32 whatever the logits' dtype (bf16 log-softmax over 30k classes loses digits).
    """
    # sum / count rather than reduction="mean": no NaN for zero targets and no host sync (no branch on
    # data), so it is torch.compile friendly. The empty sum stays attached to the graph.
    count = (targets != IGNORE_INDEX).sum().clamp(min=1)  # (,)
    ce_sum = F.cross_entropy(logits.float(), targets, ignore_index=IGNORE_INDEX, reduction="sum")
    return ce_sum / count


def pretraining_loss(
    output: PretrainOutputLike,
    mlm_targets: torch.Tensor | None,
    rop_labels: torch.Tensor | None,
    cfg: ModelConfig,
) -> LossParts:
    """Weighted MLM + ROP loss.

    ``mlm_targets`` (N,): ids at the MLM targets; ``None`` takes ``output.mlm_targets``.
    ``rop_labels`` (B,): 1 = original order, 0 = swapped, -100 = no ROP label for this row; ``None``
    (or ``cfg.rop.use_rop`` false, or no ``rop_logits``) gives an MLM-only loss.
    """
    targets = output.mlm_targets if mlm_targets is None else mlm_targets
    mlm = masked_cross_entropy(output.mlm_logits, targets)
    total = cfg.masked_lm.loss_weight * mlm

    rop_logits = getattr(output, "rop_logits", None)
    if cfg.rop.use_rop and rop_logits is not None and rop_labels is not None:
        rop = masked_cross_entropy(rop_logits, rop_labels)
        total = total + cfg.rop.loss_weight * rop
    else:
        rop = torch.zeros((), device=mlm.device, dtype=mlm.dtype)
    return LossParts(total=total, mlm=mlm, rop=rop)


__all__ = ["IGNORE_INDEX", "LossParts", "PretrainOutputLike", "masked_cross_entropy", "pretraining_loss"]
