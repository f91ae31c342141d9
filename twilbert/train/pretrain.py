"""Pre-training: MLM + Reply Order Prediction over the Arrow pair shards, resumable, DDP-ready.

:func:`pretrain` builds a :class:`Pretrainer`: ``setup`` joins the process group, opens the shards,
builds model/optimizer/schedule and resumes; ``run`` loops over optimizer steps; ``train_step`` is one
update of the shared loop (:mod:`twilbert.train.loop`) over the objectives the model config turns on
(:mod:`twilbert.train.objectives`). Checkpoints go to the run store (:mod:`twilbert.train.run_store`):
``out_dir/checkpoints/<fingerprint[:16]>/step-XXXXXXXX/``, then ``final/`` and ``summary.json``.

Why the loss is normalised by the step's all-reduced counts, how resumption is exact, what a config
change does to checkpoints, and how MFU is counted: docs/pretraining.md.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from twilbert.config import to_dict
from twilbert.model.config import ModelConfig
from twilbert.model.twilbert import TWilBERT
from twilbert.text.tokenizer import tokenizer_file
from twilbert.train import distributed as D
from twilbert.progress import Progress
from twilbert.train import run_store as store
from twilbert.train.config import ImplConfig, RunConfig, TrainingConfig
from twilbert.train.initial_weights import load_initial_weights
from twilbert.train.loop import StepCounters, TrainingDivergedError, UpdateLoop
from twilbert.train.metrics import useful_mfu
from twilbert.train.objectives import pretraining_objectives
from twilbert.train.optim import build_optimizer, param_groups
from twilbert.train.pretrain_checkpoints import PretrainCheckpoints, TrainerHooks, TrainState
from twilbert.train.pretrain_data import PretrainData
from twilbert.train.pretrain_log import SUMMARY_METRICS, StepLog, finite_or_none, host_counts, interval_metrics
from twilbert.train.pretrain_log import say as _say
from twilbert.train.run_store import RunConfigMismatchError, fingerprint, list_checkpoints
from twilbert.train.runtime import H100_BF16_PEAK_FLOPS, autocast, autocast_dtype, enable_tf32, maybe_compile, mix_seed, set_num_threads
from twilbert.train.schedules import build_schedule
from twilbert.utils import atomic_write_text, sha256_file

CHECKPOINTS_DIR = "checkpoints"
SUMMARY_FILE = "summary.json"


def training_code_sha256() -> str:
    """sha256 of the code this module runs: in the run config, so edited code trains afresh
    (:func:`twilbert.train.run_store.code_sha256`)."""
    return store.code_sha256(__name__)


def run_config(model_cfg: ModelConfig, training: TrainingConfig, world_size: int, shards_dir: Path, tokenizer_sha256: str) -> dict:
    """Everything that determines the trained weights: the recipe sections in full (``impl`` and
    ``run`` are speed and bookkeeping, so they are not arguments here)."""
    return {
        "model": to_dict(model_cfg),
        "training": to_dict(training),
        "world_size": world_size,
        "shards_manifest_sha256": sha256_file(Path(shards_dir) / "manifest.json"),
        "tokenizer_sha256": tokenizer_sha256,
        "code_sha256": training_code_sha256(),
    }


class Pretrainer(PretrainCheckpoints):
    """One pre-training run; ``pretrain()`` is the usual entry point. ``log_fn(metrics, step)`` is called
    on rank 0 every ``run.log_every`` steps (and replayed for a resumed run's history); ``normalize``: the
    normalisation rules the corpus went through, recorded in ``final/pretrain.json`` so that new text
    is normalised as the model saw it; ``hooks``: :class:`TrainerHooks`; ``run``: the bookkeeping
    (log and checkpoint intervals, ``max_bad_steps``, resumption), outside the run config."""

    def __init__(
        self,
        *,
        model_cfg: ModelConfig,
        training: TrainingConfig,
        impl: ImplConfig,
        run: RunConfig | None = None,
        shards_dir: str | Path,
        tokenizer_path: str | Path,
        out_dir: str | Path,
        log_fn: Callable[[dict, int], None] | None = None,
        progress: bool = True,
        peak_flops: float = H100_BF16_PEAK_FLOPS,
        normalize: dict | None = None,
        hooks: TrainerHooks | None = None,
    ) -> None:
        self.model_cfg, self.training, self.impl = model_cfg, training, impl
        self.bookkeeping = run or RunConfig()  # the ``run`` section (``self.run`` is the training loop)
        self.normalize = normalize  # recorded in final/pretrain.json only (not in the run config)
        self.shards_dir, self.tokenizer_path, self.out_dir = Path(shards_dir), Path(tokenizer_path), Path(out_dir)
        if self.tokenizer_path.is_dir():  # models/vocab: the file in it (pretrain.json records the file)
            self.tokenizer_path = tokenizer_file(self.tokenizer_path)
        self.log_fn, self.progress = log_fn, progress
        self.peak_flops = peak_flops
        self.hooks = hooks or TrainerHooks()
        self.state = TrainState()
        # Every logged row, saved in checkpoints and replayed on resume: a resumed run's curves and
        # final metrics are those of the whole run, not only of the part after the interruption.
        self.history: list[list] = []
        self.resumed_from: Path | None = None

    # ------------------------------------------------------------------ setup

    def setup(self) -> "Pretrainer":
        self.dist = D.init_distributed(self.impl.device)
        self.device = self.dist.device
        set_num_threads(self.impl.num_threads)
        enable_tf32()
        self.amp_dtype = autocast_dtype(self.impl.precision, self.device)
        self._setup_data()
        self._setup_model()
        return self

    def _setup_data(self) -> None:
        self.data = PretrainData(self.shards_dir, self.tokenizer_path, self.model_cfg, self.training, self.dist.world_size, self.dist.rank)
        self.tokenizer, self.plan, self.batches, self.accum = self.data.tokenizer, self.data.plan, self.data.batches, self.data.accum
        self.steps_per_epoch = math.ceil(len(self.plan) / self.accum)
        tr = self.training
        self.total_steps = tr.max_steps if tr.max_steps > 0 else tr.epochs * self.steps_per_epoch

    def _setup_model(self) -> None:
        tr, cfg, W = self.training, self.model_cfg, self.dist.world_size
        self.run_config = run_config(cfg, tr, W, self.shards_dir, self.tokenizer.sha256)
        self.fingerprint = fingerprint(self.run_config)
        self.checkpoints_root = self.out_dir / CHECKPOINTS_DIR
        self.run_dir = store.run_dir(self.checkpoints_root, self.fingerprint)
        if self.dist.is_main:
            self.checkpoints_root.mkdir(parents=True, exist_ok=True)  # a DVC out: exists whatever happens next
        torch.manual_seed(tr.seed)  # same init on every rank (DDP also broadcasts rank 0's weights)
        self.raw_model = TWilBERT(cfg, attention=self.impl.attention)
        resume = self._choose_resume()
        if resume is None and tr.path_initial_weights:
            load_initial_weights(self.raw_model, tr.path_initial_weights, cfg, self.tokenizer.sha256)
            _say(f"initial weights from {tr.path_initial_weights}")
        self.raw_model.to(self.device)
        fused = {"fused": True} if self.device.type == "cuda" and tr.optimizer in ("adam", "adamw") else {}
        groups = param_groups(self.raw_model, tr.weight_decay)
        self.optimizer = build_optimizer(tr.optimizer, groups, lr=tr.lr, betas=tr.betas, eps=tr.eps, weight_decay=tr.weight_decay, **fused)
        self.scheduler = build_schedule(
            tr.schedule,
            self.optimizer,
            warmup_steps=tr.warmup_steps,
            total_steps=max(self.total_steps, tr.warmup_steps, 1),
            hidden_size=cfg.hidden_size,
            scale=tr.lr,  # noam: TrainingConfig.lr multiplies the Noam formula
        )
        torch.manual_seed(mix_seed(tr.seed, self.dist.rank, 1))  # dropout stream, one per rank
        if resume is not None:
            self._load(resume)
        self.ddp = None
        model: nn.Module = self.raw_model
        if self.dist.is_distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp = model = nn.parallel.DistributedDataParallel(model, device_ids=ids, gradient_as_bucket_view=True)
        self.model = maybe_compile(model, self.impl.compile)
        self.report_mfu = self.device.type == "cuda"  # MFU against a GPU peak means nothing on a CPU
        self.loop = UpdateLoop(
            objectives=pretraining_objectives(cfg),
            forward=self._forward,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            params=list(self.raw_model.parameters()),
            clip=tr.clip_grad_norm,
            max_bad_steps=self.bookkeeping.max_bad_steps,
            diverged_message=self._diverged,
            device=self.device,
            world_size=W,
            ddp=self.ddp,
            say=_say,
        )
        self.log = StepLog(self.loop.objectives, self.device)

    # ------------------------------------------------------------------ data

    def loader(self, epoch: int, start_batch: int = 0) -> torch.utils.data.DataLoader:
        """This rank's masked micro-batches of ``epoch`` from ``start_batch`` on."""
        return self.data.loader(epoch, start_batch, num_workers=self.impl.num_workers, pin_memory=self.device.type == "cuda")

    def _forward(self, mb: dict) -> tuple[object, dict]:
        """The model on one micro-batch (moved to the device), under autocast."""
        b = {k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in mb.items()}
        with autocast(self.device, self.amp_dtype):
            mask = b["attention_mask"] if mb["n_real"] < mb["n_padded"] else None  # no mask: faster SDPA
            # mlm_slots (masked_lm.static_targets): a fixed row count per batch shape, -100 filler rows
            out = self.model(b["input_ids"], b["token_type_ids"], mask, b["mlm_labels"], mlm_slots=mb.get("mlm_slots"))
        return out, b

    # ------------------------------------------------------------------ one optimizer step

    def train_step(self, micro_batches: list[dict]) -> bool:
        """One optimizer step over ``micro_batches`` (this rank's share); returns False if it was skipped."""
        self.model.train()
        result = self.loop.step(micro_batches, self.state)
        if not result.skipped:
            self.log.add(result, micro_batches)
        return not result.skipped

    _host_counts = staticmethod(host_counts)

    def _diverged(self, st: StepCounters) -> str:
        last = list_checkpoints(self.run_dir)
        return (
            f"{st.consecutive_bad} consecutive optimizer steps had a NaN/inf loss or gradient norm (step {st.step}); "
            "lower training.lr, set training.clip_grad_norm, or try impl.precision=fp32 "
            f"(run.max_bad_steps={self.bookkeeping.max_bad_steps}). Last checkpoint: {last[-1] if last else 'none'}"
        )

    # ------------------------------------------------------------------ logging

    def _add_counts(self, counts: list[float]) -> None:
        st = self.state
        st.sequences += int(counts[0])
        st.tokens_real += int(counts[1])
        st.tokens_padded += int(counts[2])

    def sync_counts(self) -> None:
        """Add every rank's not-yet-counted sequences/tokens to the state (before a checkpoint or the end)."""
        self._add_counts(D.all_reduce_sum(self.log.pending.to(self.device, torch.float64, copy=True)).tolist())
        self.log.pending.zero_()

    def _flush_log(self) -> dict | None:
        """Reduce the interval's sums (one sync), call ``log_fn`` on rank 0, reset. None if nothing ran."""
        iv = self.log.reduce()
        self._add_counts(iv.totals)
        if iv.steps == 0:
            return None
        st = self.state
        metrics = {"epoch": st.epoch + st.cursor / len(self.plan), **interval_metrics(self.loop.objectives, iv), "skipped_steps": st.skipped_steps}
        if self.report_mfu and iv.counts["sequences"]:  # useful_mfu: real tokens for `mfu`, every computed position for `mfu_padded`
            c = iv.counts
            common = dict(mlm_targets=c["targets"], seconds=iv.seconds, world_size=self.dist.world_size, peak_flops=self.peak_flops)
            metrics["mfu"] = useful_mfu(self.raw_model, tokens=c["real"], sum_sq_lengths=c["real_sq"], **common)
            metrics["mfu_padded"] = useful_mfu(self.raw_model, tokens=c["padded"], sum_sq_lengths=c["padded_sq"], **common)
        self.history.append([st.step, metrics])
        if self.log_fn is not None and self.dist.is_main:
            self.log_fn(metrics, st.step)
        return metrics

    # ------------------------------------------------------------------ the loop

    def _budget_reached(self) -> bool:
        st, tr = self.state, self.training
        return st.step >= tr.max_steps if tr.max_steps > 0 else st.epoch >= tr.epochs

    def run(self, stop_after_steps: int | None = None) -> dict:
        """Train until the budget (``epochs`` or ``max_steps``) is spent, or for ``stop_after_steps``
        optimizer steps in this call (then a checkpoint is saved and the summary has ``stopped``)."""
        st = self.state
        start_step, t0, tokens0 = st.step, time.perf_counter(), st.tokens_real
        # a bar on a terminal, else a status line at a log step at most every STATUS_EVERY_S seconds
        bar = Progress(self.total_steps, "pretrain", "step", initial=st.step, enabled=self.progress and self.dist.is_main, lines_on_update=False)
        batches = None
        stopped, last_metrics, saved_at = False, (self.history[-1][1] if self.history else {}), -1
        with bar:
            while not self._budget_reached():
                if stop_after_steps is not None and st.step - start_step >= stop_after_steps:
                    stopped = True
                    break
                if batches is None:
                    batches = iter(self.loader(st.epoch, st.cursor))
                k = min(self.accum, len(self.plan) - st.cursor)
                self.train_step([next(batches) for _ in range(k)])
                if self.hooks.after_step is not None:
                    self.hooks.after_step(st.step)
                st.cursor += k
                epoch_end = st.cursor == len(self.plan)
                if epoch_end:
                    st.epoch, st.cursor, batches = st.epoch + 1, 0, None
                bar.update(1)
                last_metrics = self._after_step(epoch_end, bar) or last_metrics
                if self._saved_at_step:
                    saved_at = st.step
            if self.log.steps > 0:
                last_metrics = self._flush_log() or last_metrics
            self.sync_counts()
            if stopped and saved_at != st.step and st.step > start_step:
                self.save_step_checkpoint()
        final_dir = None if stopped else self.save_final()
        return self._summary(stopped, final_dir, time.perf_counter() - t0, tokens0, last_metrics)

    def _after_step(self, epoch_end: bool, bar) -> dict | None:
        """Log every ``run.log_every`` steps and checkpoint when due; returns the logged metrics, if any."""
        st, tr = self.state, self.bookkeeping
        done = self._budget_reached()
        metrics = None
        if st.step % tr.log_every == 0 or done:
            metrics = self._flush_log()
            if metrics:
                bar.note({"epoch": st.epoch, "loss": f"{metrics['loss']:.4f}", "mlm_accuracy": f"{metrics.get('mlm_accuracy', math.nan):.4f}",
                          "real tokens/s": f"{metrics['tokens_per_s']:.0f}"}, force=done)
        # `done` too: a budget that ends before an epoch end and a checkpoint_every multiple must
        # still leave a checkpoint (to resume a finished run, and for the DVC out to exist).
        self._saved_at_step = epoch_end or done or bool(tr.checkpoint_every and st.step % tr.checkpoint_every == 0)
        if self._saved_at_step:
            self.save_step_checkpoint()
        return metrics

    def _summary(self, stopped: bool, final_dir: Path | None, wall: float, tokens0: int, last_metrics: dict) -> dict:
        """The run's flat summary, written to ``summary.json`` on rank 0."""
        st = self.state
        summary = {
            "steps": st.step,
            "epochs": st.epoch + st.cursor / len(self.plan),
            "steps_per_epoch": self.steps_per_epoch,
            "stopped": stopped,
            "skipped_steps": st.skipped_steps,
            "sequences": st.sequences,
            "tokens_real": st.tokens_real,
            "tokens_padded": st.tokens_padded,
            "padding_waste": 1.0 - st.tokens_real / st.tokens_padded if st.tokens_padded else math.nan,
            "wall_s": wall,
            # Throughput of this call; a call that resumed a finished run reports the run's last figure.
            "tokens_per_s": (st.tokens_real - tokens0) / wall if st.tokens_real > tokens0 else last_metrics.get("tokens_per_s", math.nan),
            "world_size": self.dist.world_size,
            "device": str(self.device),
            "precision": str(self.amp_dtype or torch.float32).removeprefix("torch."),
            "num_parameters": self.raw_model.num_parameters(),
            "resumed_from_step": store.step_of(self.resumed_from) if self.resumed_from else 0,
            "fingerprint": self.fingerprint,
            "tokenizer_sha256": self.tokenizer.sha256,
            "final_dir": str(final_dir) if final_dir else "",
            **{k: v for k, v in last_metrics.items() if k in SUMMARY_METRICS},
        }
        summary = finite_or_none(summary)
        if self.dist.is_main:
            # without this call's wall time and throughput: a DVC output, it must not change on a rerun
            kept = {k: v for k, v in summary.items() if k not in ("wall_s", "tokens_per_s", "mfu")}
            atomic_write_text(self.out_dir / SUMMARY_FILE, json.dumps(kept, indent=2) + "\n")
        return summary


def pretrain(*, stop_after_steps: int | None = None, **kwargs) -> dict:
    """Pre-train (or resume pre-training) into ``out_dir``; returns the flat summary (also ``summary.json``).

    ``kwargs`` are :class:`Pretrainer`'s. ``out_dir`` gets ``checkpoints/<fingerprint>/step-XXXXXXXX/``
    (every epoch end, every ``run.checkpoint_every`` steps and at the end of the budget; the last two are
    kept), ``final/`` (``model.safetensors``, ``config.json`` = the resolved model config,
    ``pretrain.json`` = tokenizer path/sha256, steps, run fingerprint, ``normalize``) and ``summary.json``.
    Under ``torchrun`` it joins the process group (DDP). ``stop_after_steps``: see :meth:`Pretrainer.run`.
    """
    Path(kwargs["out_dir"]).mkdir(parents=True, exist_ok=True)
    trainer = Pretrainer(**kwargs)
    owns_group = not D.is_initialized()
    try:
        trainer.setup()
        return trainer.run(stop_after_steps=stop_after_steps)
    finally:
        if owns_group:
            D.cleanup()  # leave no process group behind (torchrun workers exit right after)


__all__ = [
    "Pretrainer",
    "RunConfigMismatchError",
    "TrainState",
    "TrainerHooks",
    "TrainingDivergedError",
    "pretrain",
    "run_config",
]
