"""One optimizer update, shared by pre-training and fine-tuning: accumulate, normalise, clip, guard.

:meth:`UpdateLoop.step` runs one update over this process's micro-batches. Each objective's count
(MLM targets, labelled ROP rows, one per fine-tuning micro-batch) is summed over the micro-batches,
all-reduced over the ranks and used as that objective's denominator, so every micro-batch
back-propagates ``W · Σ_objectives weight · loss_sum / count``: the accumulated gradient is that of the
mean over *all* rows of the update, however they are split into micro-batches and ranks (``W`` undoes
DDP's averaging). Why, and the equivalence it buys: docs/pretraining.md.

Non-finite guard: an update whose loss or gradient norm is NaN/inf on any rank is skipped (gradients
dropped, optimizer untouched; the schedule still advances, as the data did) and counted; after
``max_bad_steps`` skipped updates in a row :class:`TrainingDivergedError` stops the run. The decision is
one all-reduced flag: one host sync per update.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from twilbert.config import ConfigError
from twilbert.train import distributed as D
from twilbert.train.objectives.base import Objective, Sums
from twilbert.train.optim import clip_grad_norm


class TrainingDivergedError(ConfigError):
    """Too many optimizer updates in a row had a NaN/inf loss or gradient norm: the run diverged.
    A ConfigError, so the CLI prints its one line (which names the params to change)."""


@dataclass
class StepCounters:
    """Where the update guard is; checkpointed by the trainers."""

    step: int = 0  # updates done, skipped ones included
    skipped_steps: int = 0
    consecutive_bad: int = 0


@dataclass
class StepResult:
    skipped: bool
    sums: dict[str, Sums]  # per objective name: this rank's statistics of the update (device tensors)
    grad_norm: torch.Tensor  # (,) before clipping
    lr: float  # the lr this update used


class UpdateLoop:
    """Runs updates of ``objectives`` over micro-batches; ``forward(micro_batch) -> (output, batch)``
    runs the model (under autocast) and returns what the objectives read.

    ``diverged_message(counters)`` words the :class:`TrainingDivergedError`; ``say``, when given, is
    told of every skipped update. ``ddp``: the DistributedDataParallel wrapper (gradient sync only on
    the last micro-batch)."""

    def __init__(
        self,
        *,
        objectives: Sequence[Objective],
        forward: Callable[[Any], tuple[Any, Any]],
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        params: Sequence[torch.Tensor],
        clip: float | None,
        max_bad_steps: int,
        diverged_message: Callable[[StepCounters], str],
        device: torch.device,
        world_size: int = 1,
        ddp: torch.nn.parallel.DistributedDataParallel | None = None,
        say: Callable[[str], None] | None = None,
    ) -> None:
        self.objectives, self.forward = list(objectives), forward
        self.optimizer, self.scheduler = optimizer, scheduler
        self.params, self.clip, self.max_bad_steps = list(params), clip, max_bad_steps
        self.diverged_message, self.say = diverged_message, say
        self.device, self.world_size, self.ddp = device, world_size, ddp

    def denominators(self, micro_batches: Sequence[Any]) -> list[float | torch.Tensor]:
        """Each objective's count over the update, summed over ranks (at least 1)."""
        counts = [sum(obj.count(mb) for mb in micro_batches) for obj in self.objectives]
        if not D.is_initialized():
            return [float(max(c, 1)) for c in counts]
        t = torch.tensor(counts, dtype=torch.float32)
        if self.device.type == "cuda":
            t = t.pin_memory()
        t = D.all_reduce_sum(t.to(self.device, non_blocking=True))
        return [t[i].clamp(min=1.0) for i in range(len(counts))]

    def step(self, micro_batches: Sequence[Any], counters: StepCounters) -> StepResult:
        """One update over this rank's ``micro_batches``; updates ``counters`` and may raise
        :class:`TrainingDivergedError`."""
        dens = self.denominators(micro_batches)
        sums = {obj.name: obj.stats_type.zeros(self.device) for obj in self.objectives}
        step_loss = torch.zeros((), dtype=torch.float32, device=self.device)
        for i, mb in enumerate(micro_batches):
            last = i == len(micro_batches) - 1
            sync = contextlib.nullcontext() if (self.ddp is None or last) else self.ddp.no_sync()
            with sync:
                out, batch = self.forward(mb)
                loss = None
                for obj, den in zip(self.objectives, dens):
                    loss_sum, stats = obj.loss(out, batch)
                    term = obj.weight * loss_sum / den
                    loss = term if loss is None else loss + term
                    sums[obj.name] = sums[obj.name] + stats
                (loss * self.world_size).backward()  # DDP averages gradients over ranks; we want their sum
            step_loss += loss.detach()

        grad_norm = clip_grad_norm(self.params, self.clip)
        bad = (~torch.isfinite(step_loss) | ~torch.isfinite(grad_norm.to(step_loss.device))).float()
        skipped = bool(D.all_reduce_sum(bad).item() > 0)  # every rank takes the same decision; the one host sync
        lr = self.scheduler.get_last_lr()[0]
        if not skipped:
            self.optimizer.step()
        with warnings.catch_warnings():  # after a skipped first update torch warns that the order is wrong
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step\\(\\)` before", category=UserWarning)
            self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self._count(skipped, counters)
        return StepResult(skipped=skipped, sums=sums, grad_norm=grad_norm, lr=lr)

    def _count(self, skipped: bool, c: StepCounters) -> None:
        c.step += 1
        if not skipped:
            c.consecutive_bad = 0
            return
        c.skipped_steps += 1
        c.consecutive_bad += 1
        if self.say is not None:
            self.say(f"step {c.step}: non-finite loss or gradient norm; step skipped ({c.consecutive_bad} in a row)")
        if c.consecutive_bad >= self.max_bad_steps:
            raise TrainingDivergedError(self.diverged_message(c))


def reduce_sums(sums: dict[str, Sums], *extra: torch.Tensor, device: torch.device) -> tuple[dict[str, Sums], list[float]]:
    """Sum named statistics (and ``extra`` vectors) over ranks in one collective (one host sync);
    returns them as host floats: ``(sums by name, the extra values, concatenated)``."""
    parts = [torch.stack([torch.as_tensor(v, dtype=torch.float64, device=device) for v in s.values()]) for s in sums.values()]
    vec = torch.cat([*parts, *[e.to(device, torch.float64).reshape(-1) for e in extra]])
    flat = D.all_reduce_sum(vec).tolist()
    out, at = {}, 0
    for name, s in sums.items():
        n = len(s.values())
        out[name] = type(s).from_values(flat[at : at + n])
        at += n
    return out, flat[at:]


__all__ = ["StepCounters", "StepResult", "TrainingDivergedError", "UpdateLoop", "reduce_sums"]
