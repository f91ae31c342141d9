"""Fine-tuning losses, by name (``finetuning.loss``); which ones fit a task is its type's
(:attr:`twilbert.finetune.task_types.TaskType.losses`), and the type builds the loss.

* ``cross_entropy`` (single-label): ``mean_i w[y_i] · CE_i``. Class weights scale each example's loss
  and the mean is over examples, as Keras' ``class_weight`` in the original (torch's
  ``CrossEntropyLoss(weight=)`` would instead divide by ``Σ w[y_i]``).
* ``bce`` (multi-label): per-label binary cross-entropy with ``pos_weight`` = the class weights (so
  ``auto`` up-weights the positives of rare labels), mean over examples and labels.
* ``mse`` (regression).
* The original's "soft metric" losses (``utils/finetuning_losses.py``): a metric
  computed from probabilities over the whole batch, returned **negated**. ``p`` is softmax for a
  single-label task (``y`` one-hot) and sigmoid for a multi-label one. eps = 1e-16, beta = 1::

      tp_c = Σ_i y·p    fp_c = Σ_i (1-y)·p    fn_c = Σ_i y·(1-p)
      pr_c = tp/(tp+fp+eps)+eps    rc_c = tp/(tp+fn+eps)+eps    F_c = (1+β²)·pr·rc/(β²·pr+rc)

  ``macro_f1 = -mean_c F_c``; ``f1_macro`` = F of (mean pr, mean rc); ``micro_*`` sum tp/fp/fn over
  classes first; ``jaccard = -mean_i (Σ_c y·p + eps)/(Σ_c max(y,p) + eps)``, over the real batch size
  (the original divided by a hard-coded 16: docs/deviations.md#jaccard-loss-batch).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from twilbert.finetune.config import LOSSES, SOFT_LOSSES

EPS = 1e-16
BETA = 1.0

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (outputs (B, C), labels) -> scalar


def _counts(p: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    tp = (y * p).sum(0)  # (C,)
    fp = ((1 - y) * p).sum(0)  # (C,)
    fn = (y * (1 - p)).sum(0)  # (C,)
    return tp, fp, fn


def _pr_rc(tp, fp, fn) -> tuple[torch.Tensor, torch.Tensor]:
    return tp / (tp + fp + EPS) + EPS, tp / (tp + fn + EPS) + EPS


def _f(pr: torch.Tensor, rc: torch.Tensor, beta: float = BETA) -> torch.Tensor:
    return (1 + beta**2) * pr * rc / (beta**2 * pr + rc)


def soft_macro_f1(p, y):
    return -_f(*_pr_rc(*_counts(p, y))).mean()


def soft_f1_macro(p, y):
    pr, rc = _pr_rc(*_counts(p, y))
    return -_f(pr.mean(), rc.mean())


def soft_micro_f1(p, y):
    tp, fp, fn = (t.sum() for t in _counts(p, y))
    return -_f(*_pr_rc(tp, fp, fn))


def soft_macro_precision(p, y):
    return -_pr_rc(*_counts(p, y))[0].mean()


def soft_macro_recall(p, y):
    return -_pr_rc(*_counts(p, y))[1].mean()


def soft_micro_precision(p, y):
    tp, fp, fn = (t.sum() for t in _counts(p, y))
    return -_pr_rc(tp, fp, fn)[0]


def soft_micro_recall(p, y):
    tp, fp, fn = (t.sum() for t in _counts(p, y))
    return -_pr_rc(tp, fp, fn)[1]


def soft_jaccard(p, y):
    per_example = ((y * p).sum(1) + EPS) / (torch.maximum(y, p).sum(1) + EPS)  # (B,)
    return -per_example.mean()


SOFT: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "macro_f1": soft_macro_f1,
    "f1_macro": soft_f1_macro,
    "micro_f1": soft_micro_f1,
    "macro_precision": soft_macro_precision,
    "macro_recall": soft_macro_recall,
    "micro_precision": soft_micro_precision,
    "micro_recall": soft_micro_recall,
    "jaccard": soft_jaccard,
}
assert set(SOFT) == set(SOFT_LOSSES)


def weighted_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    ce = F.cross_entropy(logits.float(), labels, reduction="none")  # (B,)
    if weights is not None:
        ce = ce * weights[labels]
    return ce.mean()


def build_loss(name: str, task_type: str, class_weights: torch.Tensor | None = None) -> LossFn:
    """The loss ``name`` for a task of type ``task_type`` (a name in ``task_types.TASK_TYPES``).

    Compatibility was validated with the config (:func:`twilbert.finetune.config.check_loss_fits_task`);
    here a mismatch is a programming error.
    """
    from twilbert.finetune.task_types import get_task_type

    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; known: {LOSSES}")
    kind = get_task_type(task_type)
    if name not in kind.losses:
        raise ValueError(f"loss {name!r} does not fit a {kind.title} task; it takes {list(kind.losses)}")
    return kind.loss(name, class_weights)


__all__ = ["BETA", "EPS", "SOFT", "build_loss", "weighted_cross_entropy"] + [f.__name__ for f in SOFT.values()]
