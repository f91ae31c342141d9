"""Fine-tuning's training side: :class:`Trainer` runs an epoch of updates through the shared loop
(:mod:`twilbert.train.loop`) with the task loss as its objective; :class:`EpochLoop` runs the epochs
(train, score dev, keep the best weights, checkpoint, stop early) and resumes from a checkpoint.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from twilbert.finetune.checkpoint import EpochCheckpoints
from twilbert.finetune.config import FinetuningConfig, TaskConfig
from twilbert.finetune.inputs import EncodedSplit, bucketed_batches, collate
from twilbert.finetune.metrics import BestTracker, selection_metric, selection_score
from twilbert.finetune.model import SequenceClassifier
from twilbert.finetune.reports import scalar_metrics
from twilbert.metadata import fields
from twilbert.progress import Progress
from twilbert.train.loop import StepCounters, TrainingDivergedError, UpdateLoop
from twilbert.train.objectives import TaskLoss, TaskLossStats

LogFn = Callable[[dict[str, float], int], None]


def say(name: str, message: str) -> None:
    print(f"finetune {name}: {message}", file=sys.stderr, flush=True)


@dataclass
class Trainer:
    """What an epoch of updates needs; ``train_epoch`` runs one pass over ``data``.

    Updates go through :class:`~twilbert.train.loop.UpdateLoop`: a micro-batch's loss is divided by
    its window's size (the loss is a mean over micro-batch means), and an update whose loss or gradient
    norm is not finite is skipped and counted (``steps``); ``max_bad_steps`` in a row raise
    :class:`TrainingDivergedError`. A non-finite micro-batch loss does not enter the epoch's mean loss.
    """

    model: SequenceClassifier
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    optimizer: torch.optim.Optimizer
    scheduler: Any
    accum_iters: int
    clip: float
    device: torch.device
    autocast: Callable[[], Any]
    max_bad_steps: int = 5
    name: str = "task"
    steps: StepCounters = field(default_factory=StepCounters)  # updates, skipped ones included
    tokens: int = 0  # real tokens trained on
    seconds: float = 0.0

    @property
    def skipped(self) -> int:
        return self.steps.skipped_steps

    def counters(self) -> dict[str, Any]:
        c = self.steps
        return {"skipped": c.skipped_steps, "consecutive_bad": c.consecutive_bad, "updates": c.step, "tokens": self.tokens, "seconds": self.seconds}

    def restore(self, counters: dict[str, Any]) -> None:
        self.steps = StepCounters(step=counters["updates"], skipped_steps=counters["skipped"], consecutive_bad=counters["consecutive_bad"])
        self.tokens, self.seconds = counters["tokens"], counters["seconds"]

    def _diverged(self, c: StepCounters) -> str:
        return (
            f"tasks.{self.name}: {c.consecutive_bad} optimizer updates in a row had a non-finite loss or "
            f"gradient (up to update {c.step}); stopping, nothing saved. Lower finetuning.lr, check the "
            f"data, or raise run.max_bad_steps ({self.max_bad_steps})"
        )

    def _loop(self, data: EncodedSplit) -> UpdateLoop:
        def forward(idx: np.ndarray):
            b = collate(data, idx).to(self.device)
            with self.autocast():
                return self.model(b.input_ids, b.token_type_ids, b.attention_mask), b  # (B, C)

        return UpdateLoop(
            objectives=[TaskLoss(self.loss_fn)],
            forward=forward,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            params=[p for p in self.model.parameters() if p.requires_grad],
            clip=self.clip,
            max_bad_steps=self.max_bad_steps,
            diverged_message=self._diverged,
            device=self.device,
        )

    def train_epoch(self, data: EncodedSplit, batches: list[np.ndarray], *, progress: bool, desc: str) -> float:
        """One pass; returns the mean training loss over the examples with a finite loss (NaN if none)."""
        t0 = time.perf_counter()
        self.model.train()
        loop = self._loop(data)
        sums = TaskLossStats.zeros(self.device)
        bar = Progress(len(batches), desc, "batch", enabled=progress)
        try:
            for start in range(0, len(batches), self.accum_iters):
                window = batches[start : start + self.accum_iters]  # the last window may be short
                result = loop.step(window, self.steps)
                sums = sums + result.sums["task"]  # kept for skipped updates too: their finite losses count
                self.tokens += sum(int(data.lengths[idx].sum()) for idx in window)
                bar.update(len(window), lambda: {"loss": f"{sums.mean_loss():.4f}"})  # called only when shown
        finally:
            bar.close()
            self.seconds += time.perf_counter() - t0
        return sums.mean_loss()


RESUME_STATE = fields(
    required={"tracker": list, "counters": dict, "best_dev": dict, "history": list, "logged": list, "stopped": bool}
)  # what EpochLoop.resume reads back from a checkpoint's state.json
_COUNTERS = fields(required={"updates": int, "skipped": int, "consecutive_bad": int, "tokens": int, "seconds": float})


def check_resume_state(state: dict) -> None:
    """``state.json`` holds what :meth:`EpochLoop.resume` restores (else the checkpoint is unusable)."""
    RESUME_STATE(state)
    if len(state["tracker"]) != 3:
        raise ValueError(f"tracker: expected [best score, best epoch, epochs since best], got {len(state['tracker'])} items")
    _COUNTERS(state["counters"])


@dataclass
class EpochLoop:
    """The epochs of one task run: train, score dev, keep the best weights, checkpoint, stop early."""

    name: str
    task: TaskConfig
    ft: FinetuningConfig
    trainer: Trainer
    checkpoints: EpochCheckpoints
    evaluate: Callable[[str], tuple[np.ndarray, dict[str, Any]]]
    rng: np.random.Generator
    log_fn: LogFn | None
    progress: bool
    best_state: dict[str, torch.Tensor] | None = None
    best_dev: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    logged: list[list] = field(default_factory=list)  # [epoch, metrics] as given to log_fn, replayed on resume
    epoch: int = 0
    stopped: bool = False
    resumed_from: int | None = None

    def __post_init__(self) -> None:
        self.tracker = BestTracker(self.ft.patience)

    def resume(self) -> None:
        """From the newest good checkpoint of this very run, if any."""
        t = self.trainer
        resumed = self.checkpoints.resume(t.model, t.optimizer, t.scheduler, self.rng)
        if resumed is None:
            return
        st = resumed.state
        self.tracker.best_score, self.tracker.best_epoch, self.tracker.since_best = st["tracker"]
        t.restore(st["counters"])
        self.best_state, self.best_dev, self.history, self.logged = resumed.best_state, st["best_dev"], st["history"], st["logged"]
        self.epoch = self.resumed_from = st["epoch"]
        self.stopped = st["stopped"]
        if self.log_fn is not None:
            for e, m in self.logged:
                self.log_fn(m, e)

    def train(self, train: EncodedSplit) -> None:
        ft, task, tracker = self.ft, self.task, self.tracker
        self.train_examples = len(train)
        while not self.stopped and self.epoch < ft.epochs:
            self.epoch = epoch = self.epoch + 1
            batches = bucketed_batches(train.lengths, ft.batch_size, self.rng)
            train_loss = self.trainer.train_epoch(train, batches, progress=self.progress, desc=f"{self.name} epoch {epoch}/{ft.epochs}")
            _, dev_metrics = self.evaluate("dev")
            score = selection_score(dev_metrics, task)
            is_best = tracker.update(score, epoch)
            if is_best:
                self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in self.trainer.model.state_dict().items()}
                self.best_dev = dev_metrics
            dev_scalars = scalar_metrics(dev_metrics)
            lr = self.trainer.optimizer.param_groups[0]["lr"]
            self.history.append({"epoch": epoch, "train_loss": train_loss, "lr": lr, "dev_score": score, **{f"dev_{k}": v for k, v in dev_scalars.items()}})
            self.logged.append([epoch, {"train.loss": train_loss, "lr": lr, "dev.selection": score, **{f"dev.{k}": v for k, v in dev_scalars.items()}}])
            self.stopped = tracker.should_stop
            say(self.name, f"epoch {epoch}/{ft.epochs}: train loss {train_loss:.4f}, dev {selection_metric(task)} {score:.4f}"
                 + (" (best so far)" if is_best else f" (best: epoch {tracker.best_epoch}, {tracker.best_score:.4f})")
                 + (", early stop" if self.stopped else ""))
            state = {"tracker": [tracker.best_score, tracker.best_epoch, tracker.since_best], "counters": self.trainer.counters(),
                     "best_dev": self.best_dev, "history": self.history, "logged": self.logged, "stopped": self.stopped}
            t = self.trainer
            self.checkpoints.save(epoch, t.model, t.optimizer, t.scheduler, self.rng, None if is_best else self.best_state, state)
            if self.log_fn is not None:
                self.log_fn(self.logged[-1][1], epoch)


__all__ = ["EpochLoop", "LogFn", "Trainer", "TrainingDivergedError", "say"]
