"""Learning-rate schedules as ``torch.optim.lr_scheduler.LambdaLR`` factories.

Convention: ``s`` is the 1-based *optimizer update* count (accumulation-aware: micro-batches do not
count). Call ``scheduler.step()`` once after every ``optimizer.step()``; the lr used by update ``s``
is ``schedule(s)``. (LambdaLR's ``last_epoch`` is ``s - 1`` while update ``s`` runs.) The state is
LambdaLR's own ``state_dict()`` (plain numbers, loads with ``weights_only=True``); the lambdas are
closures rebuilt by the factory, so resuming needs the same factory arguments.

Deviation from the original ``Noam`` callback (see docs/deviations.md): it wrote ``lr(s)`` into the optimiser
*after* update ``s``, so update ``s`` ran with ``lr(s-1)`` and the very first update with the config's
``lr``; here update ``s`` uses ``lr(s)``. Resuming needs no ``initial_batch``: the scheduler state is
in the checkpoint (the original's fine-tuning apps crashed for lack of it).
"""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LambdaLR


def noam_lr(step: int, *, hidden_size: int, warmup_steps: int, scale: float = 1.0) -> float:
    """``scale · H^-0.5 · min(s^-0.5, s · warmup^-1.5)``; peaks at ``scale · (H · warmup)^-0.5``."""
    if step < 1:
        raise ValueError(f"step is 1-based, got {step}")
    return scale * hidden_size**-0.5 * min(step**-0.5, step * warmup_steps**-1.5)


def noam_schedule(optimizer: torch.optim.Optimizer, *, hidden_size: int, warmup_steps: int, scale: float = 1.0) -> LambdaLR:
    """Noam (Vaswani et al. 2017; TWilBERT ``lr_annealing.py``): sets the *absolute* lr of every group.

    As in the original the optimiser's configured lr is not used: every group gets ``noam_lr(s)``
    (``scale`` is the optional multiplier). The base lr of each group must be > 0 (LambdaLR multiplies it).
    """
    if hidden_size < 1 or warmup_steps < 1:
        raise ValueError(f"hidden_size and warmup_steps must be >= 1, got {hidden_size}, {warmup_steps}")

    def factor_for(base_lr: float):
        if base_lr <= 0:
            raise ValueError(f"noam_schedule needs a positive base lr in every group, got {base_lr}")

        def factor(epoch: int) -> float:
            return noam_lr(epoch + 1, hidden_size=hidden_size, warmup_steps=warmup_steps, scale=scale) / base_lr

        return factor

    return LambdaLR(optimizer, [factor_for(g.get("initial_lr", g["lr"])) for g in optimizer.param_groups])


def linear_factor(step: int, *, warmup_steps: int, total_steps: int) -> float:
    """Linear warm-up to 1 at ``warmup_steps``, then linear decay to 0 at ``total_steps``."""
    if step <= warmup_steps:
        return step / warmup_steps if warmup_steps > 0 else 1.0
    return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))


def linear_schedule(optimizer: torch.optim.Optimizer, *, warmup_steps: int, total_steps: int) -> LambdaLR:
    """``lr(s) = base_lr · linear_factor(s)``: base_lr/warmup at s=1, base_lr at warmup, 0 at total."""
    if not 0 <= warmup_steps <= total_steps or total_steps < 1:
        raise ValueError(f"need 0 <= warmup_steps <= total_steps and total_steps >= 1, got {warmup_steps}, {total_steps}")
    return LambdaLR(optimizer, lambda epoch: linear_factor(epoch + 1, warmup_steps=warmup_steps, total_steps=total_steps))


def constant_schedule(optimizer: torch.optim.Optimizer, *, warmup_steps: int = 0) -> LambdaLR:
    """Constant ``base_lr``, after an optional linear warm-up ``min(1, s / warmup)``."""
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
    return LambdaLR(optimizer, lambda epoch: min(1.0, (epoch + 1) / warmup_steps) if warmup_steps > 0 else 1.0)


def build_schedule(
    name: str,
    optimizer: torch.optim.Optimizer,
    *,
    warmup_steps: int = 0,
    total_steps: int | None = None,
    hidden_size: int | None = None,
    scale: float = 1.0,
) -> LambdaLR:
    """Registry: ``noam`` (needs hidden_size, warmup_steps), ``linear`` (needs total_steps), ``constant``."""
    if name == "noam":
        if hidden_size is None:
            raise ValueError("the noam schedule needs hidden_size")
        return noam_schedule(optimizer, hidden_size=hidden_size, warmup_steps=warmup_steps, scale=scale)
    if name == "linear":
        if total_steps is None:
            raise ValueError("the linear schedule needs total_steps")
        return linear_schedule(optimizer, warmup_steps=warmup_steps, total_steps=total_steps)
    if name == "constant":
        return constant_schedule(optimizer, warmup_steps=warmup_steps)
    raise ValueError(f"unknown schedule {name!r}; known: noam, linear, constant")


def noam_peak_lr(hidden_size: int, warmup_steps: int, scale: float = 1.0) -> float:
    """The Noam maximum, reached at ``s = warmup_steps``: ``scale · (H · warmup)^-0.5``."""
    return scale / math.sqrt(hidden_size * warmup_steps)


SCHEDULES = ("noam", "linear", "constant")

__all__ = [
    "SCHEDULES",
    "build_schedule",
    "constant_schedule",
    "linear_factor",
    "linear_schedule",
    "noam_lr",
    "noam_peak_lr",
    "noam_schedule",
]
