"""Training configs owned by the core (sections ``training``, ``impl`` and ``run``).

The section a key lives in says what it may change, and that one rule decides DVC invalidation, the
run fingerprint and what MLflow logs as params (``pipeline/stage_params.py``):

* ``TrainingConfig`` is recipe: it changes results, so it is in the stage's DVC params and hashed in
  full into the run fingerprint.
* ``ImplConfig`` is implementation: device, precision, compile, attention backend, threads, workers,
  GPU count and prediction batch size may only change speed (up to float rounding), as in Cramming's
  ``impl`` group.
* ``RunConfig`` is bookkeeping: when to log and checkpoint, how many bad steps to tolerate before
  giving up, and where to resume from. It decides what is recorded and whether a run stops, never the
  weights a finished run produces.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from twilbert.config import check


@dataclass(frozen=True, kw_only=True)
class TrainingConfig:
    """Pre-training recipe (the original's ``training`` section)."""

    batch_size: int = 32  # sequences per micro-batch (per process under DDP)
    epochs: int = 1
    max_steps: int = 0  # optimizer-step budget; 0 = run `epochs` full epochs
    optimizer: Literal["adam", "adamw", "lamb"] = "adam"
    lr: float = 1e-3  # peak lr for linear/constant; a multiplier on the Noam formula for noam
    betas: tuple[float, float] = (0.9, 0.98)  # the original's Adam betas
    eps: float = 1e-6
    weight_decay: float = 0.0
    schedule: Literal["noam", "linear", "constant"] = "noam"
    warmup_steps: int = 100
    accum_iters: int = 1  # micro-batches per optimizer step, over all processes (a multiple of the process count)
    clip_grad_norm: float = 1.0  # 0 = off
    path_initial_weights: str | None = None  # continue from these weights (a checkpoint dir)
    seed: int = 1234
    bucket_width: int = 8  # length-bucket width in tokens (batches mix lengths within one bucket only)

    def __post_init__(self) -> None:
        for name in ("batch_size", "accum_iters", "bucket_width"):
            check(getattr(self, name) >= 1, name, "must be >= 1")
        check(self.epochs >= 1 or self.max_steps >= 1, "epochs", "need epochs >= 1 or max_steps >= 1")
        check(self.max_steps >= 0, "max_steps", "must be >= 0")
        check(self.lr > 0, "lr", "must be > 0")
        check(all(0.0 <= b < 1.0 for b in self.betas), "betas", "each must be in [0, 1)")
        check(self.eps > 0, "eps", "must be > 0")
        check(self.weight_decay >= 0, "weight_decay", "must be >= 0")
        check(self.warmup_steps >= 0, "warmup_steps", "must be >= 0")
        check(self.schedule != "noam" or self.warmup_steps >= 1, "warmup_steps", "noam needs warmup_steps >= 1")
        check(self.clip_grad_norm >= 0, "clip_grad_norm", "must be >= 0")


def accum_share_problem(training: TrainingConfig, processes: int) -> str | None:
    """Why ``training.accum_iters`` cannot be shared by ``processes`` (it counts an update's
    micro-batches over all of them, so it must be a multiple), or None. Checked for ``impl.n_gpus`` when
    params load and for the real world size when pre-training starts (torchrun may be run by hand)."""
    if training.accum_iters % processes == 0:
        return None
    return (
        f"{training.accum_iters} micro-batches per update cannot be shared by {processes} processes; use a "
        f"multiple of {processes} (an update is batch_size x accum_iters sequences in all: e.g. batch_size "
        f"{max(1, training.batch_size // processes)} x accum_iters {training.accum_iters * processes} for about "
        f"the same update, or accum_iters {processes} for a {processes}x larger one)"
    )


@dataclass(frozen=True, kw_only=True)
class ImplConfig:
    """Implementation knobs: they must change speed only, never results (up to float rounding)."""

    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto = bf16 autocast on CUDA with bf16 support
    compile: bool = False
    attention: Literal["sdpa", "eager"] = "sdpa"
    num_threads: int = 0  # torch intra-op threads; 0 = torch's default
    tokenizer_threads: int = 0  # sentencepiece threads; 0 = all cores
    num_workers: int = 0  # data-loader worker processes
    progress: bool = True  # a bar on a terminal, a status line every 30 s otherwise (twilbert.progress)
    # > 1: the pretrain stage relaunches itself under torchrun (DDP). Speed only: training.accum_iters
    # counts an update's micro-batches over all processes, so an update is the same on any count.
    n_gpus: int = 1
    pred_batch_size: int = 64  # fine-tuning's evaluation/prediction batch (no gradients: speed only)

    def __post_init__(self) -> None:
        for name in ("num_threads", "tokenizer_threads", "num_workers"):
            check(getattr(self, name) >= 0, name, "must be >= 0")
        for name in ("n_gpus", "pred_batch_size"):
            check(getattr(self, name) >= 1, name, "must be >= 1")


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    """Bookkeeping for pre-training and fine-tuning (section ``run``): never in a fingerprint or DVC
    params, since changing it must neither retrain nor invalidate a model. One ``max_bad_steps`` for
    both trainers: they share one update loop and one divergence error."""

    log_every: int = 10  # optimizer steps between logged metrics
    checkpoint_every: int = 0  # also checkpoint every N optimizer steps; 0 = only at epoch ends
    max_bad_steps: int = 5  # consecutive NaN/inf (skipped) optimizer steps before the run stops with an error
    # Checkpoints live in one directory per run config (docs/pretraining.md, "Checkpoints and config
    # changes"). restart: a config without checkpoints of its own trains from scratch (what `dvc exp
    # run -S` needs); error: refuse that when the out dir holds checkpoints of another config.
    on_config_change: Literal["restart", "error"] = "restart"
    resume_from: str | None = None  # resume from this checkpoint (a step-* dir or a dir of them); must match the run config but for the code

    def __post_init__(self) -> None:
        for name in ("log_every", "max_bad_steps"):
            check(getattr(self, name) >= 1, name, "must be >= 1")
        check(self.checkpoint_every >= 0, "checkpoint_every", "must be >= 0")
        check(self.resume_from is None or bool(str(self.resume_from).strip()), "resume_from", "must be a path or null")
