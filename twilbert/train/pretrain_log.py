"""What pre-training reports: the logging interval's metrics, status lines and the run summary.

Between two log lines, the good steps' objective statistics (named :class:`~twilbert.train.objectives.Sums`),
gradient norms and host-side token counts are summed; :meth:`StepLog.reduce` all-reduces everything in
one collective (one host sync) and :func:`interval_metrics` turns it into the logged row. Throughput
counts real (non-pad) tokens; MFU (CUDA only) is :func:`twilbert.train.metrics.useful_mfu`.
Without a terminal (``dvc repro``, nohup, CI) :class:`twilbert.progress.Progress` prints a status line at a
log step at most every ``STATUS_EVERY_S`` seconds (30), so the log reader sees the run is alive.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from twilbert.train import distributed as D
from twilbert.train.loop import StepResult, reduce_sums
from twilbert.train.objectives import Objective, Sums, pretraining_metric_names

SUMMARY_METRICS = ("loss", "mlm_loss", "rop_loss", "mlm_accuracy", "rop_accuracy", "grad_norm", "mfu")
HOST_COUNTS = ("sequences", "real", "padded", "real_sq", "padded_sq", "targets")  # see host_counts


def host_counts(micro_batches: list[dict]) -> list[float]:
    """This rank's ``[sequences, real tokens, padded tokens, Σ real length², Σ padded length², MLM
    targets]`` of one step (host-side: the masks are CPU tensors here); the squares feed MFU."""
    real_len = [mb["attention_mask"].sum(1, dtype=torch.float64) for mb in micro_batches]  # (B,) each
    return [
        sum(mb["input_ids"].shape[0] for mb in micro_batches),
        sum(mb["n_real"] for mb in micro_batches),
        sum(mb["n_padded"] for mb in micro_batches),
        float(sum((t * t).sum() for t in real_len)),
        float(sum(mb["n_padded"] * mb["input_ids"].shape[1] for mb in micro_batches)),  # B·T² per batch
        sum(mb["n_targets"] for mb in micro_batches),
    ]


@dataclass
class Interval:
    """One reduced logging interval (host floats, all ranks)."""

    sums: dict[str, Sums]
    counts: dict[str, float]  # HOST_COUNTS
    totals: list[float]  # sequences, real, padded tokens not yet added to the run's state
    grad_norm_sum: float
    steps: int
    seconds: float
    lr: float


class StepLog:
    def __init__(self, objectives: Sequence[Objective], device: torch.device) -> None:
        self.objectives, self.device = list(objectives), device
        self.pending = torch.zeros(3, dtype=torch.float64)  # sequences, real, padded: not yet in the state
        self.reset()

    def reset(self) -> None:
        self.sums = {obj.name: obj.stats_type.zeros(self.device) for obj in self.objectives}
        self.grad_norm = torch.zeros((), dtype=torch.float64, device=self.device)
        self.steps = 0  # good steps in the interval (the same on every rank)
        self.host = torch.zeros(len(HOST_COUNTS), dtype=torch.float64)  # this rank's host_counts
        self.t0 = time.perf_counter()
        self.lr = math.nan

    def add(self, result: StepResult, micro_batches: list[dict]) -> None:
        """A good step's statistics (no sync)."""
        host = torch.tensor(host_counts(micro_batches), dtype=torch.float64)
        for name, sums in result.sums.items():
            self.sums[name] = self.sums[name] + sums
        self.grad_norm += result.grad_norm.detach().to(self.grad_norm.device, torch.float64)
        self.steps += 1
        self.host += host
        self.pending += host[:3]
        self.lr = result.lr

    def reduce(self) -> Interval:
        """Everything summed over ranks (one collective); the interval starts afresh."""
        sums, rest = reduce_sums(self.sums, self.host, self.pending, device=self.device)
        n = len(HOST_COUNTS)
        out = Interval(sums, dict(zip(HOST_COUNTS, rest[:n])), rest[n:], float(self.grad_norm), self.steps,
                       max(time.perf_counter() - self.t0, 1e-9), self.lr)
        self.pending.zero_()
        self.reset()
        return out


def logged_loss(objectives: Sequence[Objective], sums: dict[str, Sums]) -> float:
    """The logged total: the first (main) objective always counts, the others when they had rows."""
    total = math.nan
    for i, obj in enumerate(objectives):
        s = sums[obj.name]
        if i == 0:
            total = obj.weight * s.mean_loss()
        elif float(getattr(s, s.denominator)):
            total = total + obj.weight * s.mean_loss()
    return total


def interval_metrics(objectives: Sequence[Objective], iv: Interval) -> dict[str, float]:
    """The loss, every objective's named metrics (NaN for a disabled one: the columns stay put), lr,
    mean gradient norm and throughput of one interval."""
    named = {name: math.nan for name in pretraining_metric_names()}
    for s in iv.sums.values():
        named.update(s.metrics())
    real, padded = iv.counts["real"], iv.counts["padded"]
    return {
        "loss": logged_loss(objectives, iv.sums),
        **named,
        "lr": iv.lr,
        "grad_norm": iv.grad_norm_sum / iv.steps,
        "tokens_per_s": real / iv.seconds,  # real (non-pad) tokens, all ranks
        "padded_tokens_per_s": padded / iv.seconds,
        "padding_waste": 1.0 - real / padded if padded else math.nan,
    }


def say(message: str) -> None:
    """A pre-training message on stderr, from rank 0 only."""
    if D.is_main():
        print(f"pretrain: {message}", file=sys.stderr, flush=True)


def finite_or_none(summary: dict) -> dict:
    """NaN (a head without labels, nothing trained in this call) -> None: valid JSON for DVC metrics."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in summary.items()}


__all__ = ["HOST_COUNTS", "SUMMARY_METRICS", "Interval", "StepLog", "finite_or_none", "host_counts", "interval_metrics", "logged_loss", "say"]
