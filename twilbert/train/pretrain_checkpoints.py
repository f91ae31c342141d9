"""The checkpoint side of :class:`~twilbert.train.pretrain.Pretrainer` (mixed into it): choose and load
the checkpoint to resume, save step checkpoints into the run store and the ``final/`` directory.

A checkpoint stores where training was (epoch, micro-batch cursor, step), weights, optimizer, scheduler
and every rank's RNG states, plus the run config and the logged history; a resumed run gives
bit-identical weights on CPU. Non-finite weights are never saved.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from twilbert.config import to_dict
from twilbert.metadata import parse_json
from twilbert.train import distributed as D
from twilbert.train import run_store as store
from twilbert.train.checkpoint import PRETRAIN_META, TRAINER_FILE, CheckpointError, load_checkpoint, load_trainer_state, save_checkpoint
from twilbert.train.loop import StepCounters, TrainingDivergedError
from twilbert.train.pretrain_log import say as _say
from twilbert.utils import atomic_write_text

FINAL_DIR = "final"


@dataclass
class TrainState(StepCounters):
    """Where training is (``step``, ``skipped_steps``, ``consecutive_bad`` from the update loop). Everything
    here goes into checkpoints (``extra``)."""

    epoch: int = 0  # current epoch, 0-based
    cursor: int = 0  # micro-batches of `epoch` this rank has consumed (at an optimizer-step boundary)
    sequences: int = 0  # global counts, over good steps
    tokens_real: int = 0
    tokens_padded: int = 0


@dataclass(frozen=True)
class TrainerHooks:
    """Callbacks into a run; the crash tests inject their faults through them."""

    after_step: Callable[[int], None] | None = None  # after optimizer step n (this process)
    on_checkpoint_write: Callable[[Path], None] | None = None  # a checkpoint file's temp file is complete, not renamed


class PretrainCheckpoints:
    """Needs the Pretrainer's attributes (state, model, optimizer, run store paths, ...)."""

    def _choose_resume(self) -> Path | None:
        bk = self.bookkeeping
        return D.on_main_then_broadcast(
            lambda: store.choose_resume_checkpoint(
                self.checkpoints_root, self.run_config, resume_from=bk.resume_from, on_config_change=bk.on_config_change, say=_say
            ),
            CheckpointError,
        )

    def _load(self, directory: Path) -> None:
        load_checkpoint(directory, self.raw_model, to_dict(self.model_cfg))
        extra = load_trainer_state(directory, self.optimizer, self.scheduler, restore_rng=True)
        where = f"{directory / TRAINER_FILE} (extra.%s)"
        self.state = TrainState(**parse_json(extra.get("state"), where % "state", schema=TrainState, error=CheckpointError))
        D.restore_rng_state(extra.get("rng_per_rank") or [], self.dist.rank, self.device)
        self.history = parse_json(extra.get("history", "[]"), where % "history", kind=list, error=CheckpointError, allow_nan=True)
        if self.log_fn is not None and self.dist.is_main:
            for step, metrics in self.history:  # the new MLflow run and curves file get the whole run
                self.log_fn(metrics, step)
        self.resumed_from = directory
        _say(f"resuming from {directory} (step {self.state.step}, epoch {self.state.epoch}, batch {self.state.cursor})")

    def _check_finite(self, what: str) -> None:
        """Refuse to save non-finite weights (cannot happen with the update guard)."""
        if not bool(torch.stack([torch.isfinite(p).all() for p in self.raw_model.parameters()]).all()):
            raise TrainingDivergedError(f"refusing to save non-finite {what}")

    def save_step_checkpoint(self) -> Path:
        """``checkpoints/<fingerprint>/step-XXXXXXXX`` (rank 0 writes; all ranks take part), keeping the
        last ``KEEP_CHECKPOINTS`` of this config and the newest ``KEEP_RUNS`` configs."""
        self.sync_counts()
        rng = D.rng_states_per_rank(self.device)
        directory = self.run_dir / f"step-{self.state.step:08d}"
        if self.dist.is_main:
            self._check_finite(f"weights at step {self.state.step}")
            extra = {
                "state": json.dumps(asdict(self.state)),
                "fingerprint": self.fingerprint,
                "run_config": json.dumps(self.run_config, sort_keys=True),
                "rng_per_rank": rng,
                "history": json.dumps(self.history),
            }
            self.run_dir.mkdir(parents=True, exist_ok=True)
            store.write_run_file(self.run_dir, self.fingerprint, self.run_config)
            save_checkpoint(directory, self.raw_model, to_dict(self.model_cfg), optimizer=self.optimizer, scheduler=self.scheduler,
                            extra=extra, on_write=self.hooks.on_checkpoint_write)
            store.prune_checkpoints(self.run_dir)
            store.prune_runs(self.checkpoints_root, self.run_dir, say=_say)
        D.barrier()
        return directory

    def save_final(self) -> Path:
        """``final/``: weights + model config (loadable by ``load_checkpoint``) and ``pretrain.json``."""
        directory = self.out_dir / FINAL_DIR
        if self.dist.is_main:
            self._check_finite("final weights")
            save_checkpoint(directory, self.raw_model, to_dict(self.model_cfg), rng=False, on_write=self.hooks.on_checkpoint_write)
            meta = {
                "tokenizer_path": str(self.tokenizer_path),
                "tokenizer_sha256": self.tokenizer.sha256,
                "step": self.state.step,
                "epochs": self.state.epoch + self.state.cursor / len(self.plan),
                "fingerprint": self.fingerprint,
                "run_config": self.run_config,
            }
            if self.normalize is not None:
                meta["normalize"] = self.normalize
            atomic_write_text(directory / PRETRAIN_META, json.dumps(meta, indent=2, sort_keys=True) + "\n")
        D.barrier()
        return directory


__all__ = ["FINAL_DIR", "PretrainCheckpoints", "TrainState", "TrainerHooks"]
