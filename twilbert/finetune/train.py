"""Fine-tune one task: train on train, select the best epoch on dev, report dev and test.

Loop (``finetune_task``):
1. read and validate the three splits (dev/test rows whose id is in an earlier split quarantined,
   counted in metrics.json ``data`` and listed in rejects.tsv), normalise and tokenise them
   (:mod:`twilbert.finetune.data`);
2. build the encoder (pre-trained checkpoint, or random for ``path_load_weights: random``) and the
   classifier head; seed everything from ``finetuning.seed``;
3. every epoch: length-bucketed batches in a fresh seeded order, gradient accumulation, clipping,
   optimiser + lr schedule per *update*; then score dev (eval mode, no dropout) and keep the weights
   of the best epoch (strictly greater score; ties keep the earlier); stop after ``patience`` epochs
   without improvement; checkpoint the epoch (:mod:`twilbert.finetune.checkpoint`), so that a killed
   run resumes bitwise where it was;
4. restore the best-dev weights, evaluate test once with them (test never selects anything), save the
   model directory and the reports (never non-finite weights).

An update with a NaN/inf loss or gradient is skipped and counted; ``finetuning.max_bad_steps`` of them
in a row stop the run with :class:`NonFiniteTrainingError` (issue 7).

Differences from the original loop (inventory §9): batches are length-bucketed mini-batches (not one
whole bucket per ``fit`` call, in ascending length order), the data order changes every epoch (the
original re-seeded every epoch, bug §13.19), test is evaluated once with the restored best-dev weights
rather than at every dev improvement, and the learning rate follows a schedule per update.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from twilbert.config import ConfigError, to_dict
from twilbert.finetune.checkpoint import EpochCheckpoints, all_finite, tensors_sha256
from twilbert.finetune.config import FinetuningConfig, TaskConfig, effective_finetuning
from twilbert.finetune.data import EncodedSplit, bucketed_batches, class_weights, collate, data_counts, encode_split, eval_batches, load_task
from twilbert.finetune.losses import build_loss
from twilbert.finetune.metrics import BestTracker, compute_metrics, selection_metric, selection_score
from twilbert.finetune.model import SequenceClassifier, load_encoder, pretrained_tokenizer_sha256, probabilities, save_finetuned
from twilbert.finetune.reports import (
    RUN_INFO_FILE,
    scalar_metrics,
    write_class_report,
    write_confusion,
    write_history,
    write_json,
    write_metrics,
    write_predictions,
    write_rejects,
)
from twilbert.model.config import ModelConfig
from twilbert.model.twilbert import TWilBERT
from twilbert.text.normalize import EffectiveRules, NormalizeRules
from twilbert.text.tokenizer import Tokenizer, tokenizer_file
from twilbert.train.config import ImplConfig
from twilbert.train.optim import build_optimizer, clip_grad_norm, param_groups
from twilbert.train.schedules import build_schedule
from twilbert.utils import sha256_file, source_sha256

LogFn = Callable[[dict[str, float], int], None]


# --------------------------------------------------------------------------------------------------
# device and precision


def resolve_device(impl: ImplConfig) -> torch.device:
    if impl.device == "cuda" or (impl.device == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ConfigError("impl.device: cuda requested but no CUDA device is available")
        return torch.device("cuda")
    return torch.device("cpu")


def autocast_for(impl: ImplConfig, device: torch.device):
    """bf16 autocast on CUDA (``precision: auto`` where supported, or ``bf16``); fp32 otherwise."""
    use_bf16 = impl.precision == "bf16" or (
        impl.precision == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported()
    )
    if use_bf16:
        return lambda: torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext


# --------------------------------------------------------------------------------------------------
# prediction (shared with the later `predict` stage)


def predict_batches(
    model: SequenceClassifier,
    data: EncodedSplit,
    *,
    batch_size: int,
    device: torch.device | str = "cpu",
    autocast: Callable[[], Any] = nullcontext,
    progress: bool = False,
    desc: str = "predict",
) -> np.ndarray:
    """Raw outputs (N, n_outputs) float32 in the order of ``data``, in eval mode under inference_mode.

    Batches are sorted by length (least padding) and scattered back. The model's train/eval mode is
    restored afterwards.
    """
    was_training = model.training
    model.eval()
    out = np.zeros((len(data), model.head.out_features), dtype=np.float32)
    batches = list(eval_batches(data.lengths, batch_size))
    try:
        with torch.inference_mode():
            for idx in tqdm(batches, desc=desc, disable=not progress, leave=False):
                b = collate(data, idx).to(device)
                with autocast():
                    y = model(b.input_ids, b.token_type_ids, b.attention_mask)  # (B, C)
                out[idx] = y.float().cpu().numpy()
    finally:
        model.train(was_training)
    return out


# --------------------------------------------------------------------------------------------------
# building blocks


def build_encoder(
    ft: FinetuningConfig,
    *,
    pretrained_dir: str | Path | None,
    model_config: ModelConfig | None,
    attention: str = "sdpa",
) -> tuple[TWilBERT, str]:
    """The encoder to fine-tune and where it came from: ``path_load_weights`` (a checkpoint dir),
    ``random`` (``model_config``, resolved), or by default the pipeline's ``pretrained_dir``."""
    source = ft.path_load_weights
    if source == "random":
        if model_config is None:
            raise ConfigError("finetuning.path_load_weights: 'random' needs the model config (model section)")
        return TWilBERT(model_config, attention=attention), "random"
    path = source if source is not None else pretrained_dir
    if path is None:
        raise ConfigError("finetuning.path_load_weights: no pre-trained model given (null needs the pretrain stage's output)")
    return load_encoder(path, attention=attention), str(path)


def _check_fits(encoder: TWilBERT, tokenizer: Tokenizer, ft: FinetuningConfig, task: TaskConfig, name: str) -> None:
    """The tokenizer must be the encoder's, and the longest input must fit its position table."""
    pair = task.aux_header is not None
    cfg = encoder.config
    if cfg.vocab_size != tokenizer.vocab_size:
        raise ConfigError(
            f"tasks.{name}: the tokenizer has {tokenizer.vocab_size} pieces but the encoder was built for "
            f"vocab_size={cfg.vocab_size}; use the vocabulary the model was pre-trained with"
        )
    need = 2 * ft.max_len + 3 if pair else ft.max_len + 2
    if need > cfg.max_positions:
        most = (cfg.max_positions - 3) // 2 if pair else cfg.max_positions - 2
        key = f"tasks.{name}.finetuning.max_len" if "max_len" in (task.finetuning or {}) else "finetuning.max_len"
        raise ConfigError(
            f"{key}: {ft.max_len} tokens per segment need {need} positions, the "
            f"encoder has {cfg.max_positions}; use max_len <= {most}"
        )


def _update_windows(n_batches: int, accum: int) -> np.ndarray:
    """Micro-batches in the accumulation window of each micro-batch (the last window may be short:
    its loss is averaged over its own size, so every update is a mean over micro-batches)."""
    sizes = np.full(n_batches, accum, dtype=np.int64)
    tail = n_batches % accum
    if tail:
        sizes[n_batches - tail :] = tail
    return sizes


def _rules_dict(rules: EffectiveRules | NormalizeRules | None) -> dict | None:
    if rules is None:
        return None
    return to_dict(rules.effective() if isinstance(rules, NormalizeRules) else rules)


# --------------------------------------------------------------------------------------------------
# one epoch, one evaluation


class NonFiniteTrainingError(ConfigError):
    """Too many optimizer updates in a row had a NaN/inf loss or gradient: the run diverged (usually
    the lr or the loss settings; a ConfigError so the CLI prints one line)."""


@dataclass
class Trainer:
    """What an epoch of updates needs; ``train_epoch`` runs one pass over ``data``.

    Numerical faults (issue 7): an update whose window has a non-finite loss (any micro-batch) or a
    non-finite gradient norm is skipped (no optimizer step; the lr schedule still advances, as in
    pre-training) and counted; ``max_bad_steps`` skipped updates in a row raise
    :class:`NonFiniteTrainingError`. A non-finite micro-batch loss is not back-propagated and does not
    enter the epoch's mean training loss.
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
    skipped: int = 0  # updates skipped for a non-finite loss or gradient
    consecutive_bad: int = 0
    updates: int = 0  # optimizer updates attempted (skipped ones included)
    tokens: int = 0  # real tokens trained on
    seconds: float = 0.0

    COUNTERS = ("skipped", "consecutive_bad", "updates", "tokens", "seconds")

    def counters(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.COUNTERS}

    def restore(self, counters: dict[str, Any]) -> None:
        for k in self.COUNTERS:
            setattr(self, k, counters[k])

    def _update(self, window_bad: bool, trainable: list[torch.Tensor]) -> None:
        self.updates += 1
        norm = None if window_bad else clip_grad_norm(trainable, self.clip)
        if norm is not None and bool(torch.isfinite(norm)):
            self.optimizer.step()
            self.consecutive_bad = 0
        else:  # a non-finite loss or gradient would poison the weights: skip this update
            self.skipped += 1
            self.consecutive_bad += 1
            if self.consecutive_bad >= self.max_bad_steps:
                self.optimizer.zero_grad(set_to_none=True)
                raise NonFiniteTrainingError(
                    f"tasks.{self.name}: {self.consecutive_bad} optimizer updates in a row had a non-finite loss or "
                    f"gradient (up to update {self.updates}); stopping, nothing saved. Lower finetuning.lr, check the "
                    f"data, or raise finetuning.max_bad_steps ({self.max_bad_steps})"
                )
        with warnings.catch_warnings():  # after a skipped first update torch warns that the order is wrong
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step\\(\\)` before", category=UserWarning)
            self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

    def train_epoch(self, data: EncodedSplit, batches: list[np.ndarray], *, progress: bool, desc: str) -> float:
        """One pass; returns the mean training loss over the examples with a finite loss (NaN if none)."""
        model, t0 = self.model, time.perf_counter()
        model.train()
        trainable = [p for p in model.parameters() if p.requires_grad]
        windows = _update_windows(len(batches), self.accum_iters)
        loss_sum, n_seen, window_bad = 0.0, 0, False
        bar = tqdm(batches, desc=desc, disable=not progress, leave=False)
        try:
            for i, idx in enumerate(bar):
                b = collate(data, idx).to(self.device)
                with self.autocast():
                    out = model(b.input_ids, b.token_type_ids, b.attention_mask)  # (B, C)
                loss = self.loss_fn(out, b.labels)
                value = float(loss.detach())
                if math.isfinite(value):
                    (loss / windows[i]).backward()
                    loss_sum += value * len(idx)
                    n_seen += len(idx)
                else:
                    window_bad = True
                self.tokens += int(data.lengths[idx].sum())
                if (i + 1) % self.accum_iters == 0 or i == len(batches) - 1:
                    self._update(window_bad, trainable)
                    window_bad = False
                if n_seen:
                    bar.set_postfix(loss=f"{loss_sum / n_seen:.4f}")
        finally:
            self.seconds += time.perf_counter() - t0
        return loss_sum / n_seen if n_seen else float("nan")


def evaluate_split(
    model: SequenceClassifier, data: EncodedSplit, gold: np.ndarray, task: TaskConfig, *, batch_size: int, device, autocast=nullcontext
) -> tuple[np.ndarray, dict[str, Any]]:
    """Probabilities (softmax / sigmoid / values) and all metrics of one split, in eval mode."""
    outputs = predict_batches(model, data, batch_size=batch_size, device=device, autocast=autocast)
    probs = probabilities(torch.from_numpy(outputs), task.task_type).numpy()
    return probs, compute_metrics(gold, probs, task)


# --------------------------------------------------------------------------------------------------
# the task

def finetune_code_sha256() -> str:
    """sha256 of the code this module runs (itself and every ``twilbert`` module it imports): in the
    run config, so that a checkpoint left by an interrupted run is not resumed by edited code (DVC
    reruns the stage because of the edit; half a run from each version of the code would be neither's
    result). As for pre-training (:func:`twilbert.train.pretrain.training_code_sha256`)."""
    return source_sha256(__name__)


def default_checkpoint_dir(model_out: str | Path) -> Path:
    """``<model_out>/../.checkpoints/<model_out name>``: ``models/finetune/.checkpoints/<task>`` for the
    stage (not a DVC output in dvc.yaml, so DVC leaves it alone and an interrupted run resumes from it)."""
    model_out = Path(model_out)
    return model_out.parent / ".checkpoints" / model_out.name


def _say(name: str, message: str) -> None:
    print(f"finetune {name}: {message}", file=sys.stderr, flush=True)


def finetune_task(
    name: str,
    task: TaskConfig,
    finetuning: FinetuningConfig,
    *,
    tokenizer_path: str | Path,
    rules: EffectiveRules | NormalizeRules | None,
    model_out: str | Path,
    report_out: str | Path,
    pretrained_dir: str | Path | None = None,
    model_config: ModelConfig | None = None,
    encoder_factory: Callable[[], TWilBERT] | None = None,
    impl: ImplConfig | None = None,
    data_root: str | Path | None = None,
    log_fn: LogFn | None = None,
    progress: bool = True,
    seed: int | None = None,
    checkpoint_dir: str | Path | None = None,
    clear_checkpoints: bool = True,
) -> dict[str, Any]:
    """Fine-tune task ``name`` once and write ``model_out/`` (model.safetensors, config.json, spm.model,
    checksums.json) and ``report_out/`` (metrics.json, class_report.json/.md, confusion.png/.csv,
    predictions.tsv, history.csv, rejects.tsv (split rows left out: repeated ids), and run_info.json: wall times, throughput and resume details, kept
    out of metrics.json so that the DVC metric is the same on every rerun). Returns the summary
    written to metrics.json, plus the dev/test scalar metrics and ``run_info``.

    ``finetuning`` are the section defaults: the task's own overrides are applied here
    (:func:`effective_finetuning`); ``seed`` replaces ``finetuning.seed`` (one run of
    ``finetuning.seeds``, see :func:`twilbert.finetune.runs.finetune_runs`). The encoder comes from
    ``encoder_factory()`` when given (tests), else from :func:`build_encoder`. ``log_fn(metrics,
    epoch)`` receives ``train.loss``, ``lr`` and ``dev.*`` after every epoch (replayed for the epochs
    of a resumed checkpoint).

    Crash safety: after every epoch a checkpoint goes to ``checkpoint_dir`` (default
    :func:`default_checkpoint_dir`; layout and fingerprint rules in :mod:`twilbert.finetune.checkpoint`),
    and a run of the same configuration resumes from the newest good one: on CPU the result is
    bitwise that of an uninterrupted run. ``clear_checkpoints``: remove them once the outputs are
    written (the directory itself stays).
    """
    t_start = time.perf_counter()
    ft = effective_finetuning(finetuning, task, name)
    ft = dataclasses.replace(ft, seed=ft.seed if seed is None else seed, seeds=None)
    impl = impl or ImplConfig()
    if impl.num_threads:
        torch.set_num_threads(impl.num_threads)
    device = resolve_device(impl)
    autocast = autocast_for(impl, device)

    # data and model
    tokenizer_path = tokenizer_file(tokenizer_path)  # models/vocab -> the spm.model / tokenizer.json in it
    tokenizer = Tokenizer.from_file(tokenizer_path)
    splits = load_task(task, data_root, name=name)  # repeated ids quarantined (or an error): task.repeated_ids
    torch.manual_seed(ft.seed)
    rng = np.random.default_rng(ft.seed)
    if encoder_factory is not None:
        encoder, source = encoder_factory(), "encoder_factory"
    else:
        encoder, source = build_encoder(ft, pretrained_dir=pretrained_dir, model_config=model_config, attention=impl.attention)
    _check_fits(encoder, tokenizer, ft, task, name)
    if source not in ("random", "encoder_factory"):
        sha = pretrained_tokenizer_sha256(source)
        if sha is not None and sha != tokenizer.sha256:
            raise ConfigError(
                f"tasks.{name}: {tokenizer_path} is not the vocabulary the encoder in {source} was pre-trained with "
                f"(sha256 {tokenizer.sha256[:12]} vs {sha[:12]})"
            )
    run_config = {
        "task": to_dict(task),
        "finetuning": to_dict(ft),
        "data_sha256": {s: sha256_file(splits[s].path) for s in splits},
        "tokenizer_sha256": tokenizer.sha256,
        "normalize": _rules_dict(rules),
        "model": to_dict(encoder.config),
        "initial_encoder_sha256": tensors_sha256(encoder.state_dict()),
        "code_sha256": finetune_code_sha256(),
    }
    enc = {s: encode_split(splits[s], tokenizer, max_len=ft.max_len, rules=rules, num_threads=impl.tokenizer_threads) for s in splits}
    model = SequenceClassifier(
        encoder,
        task.n_outputs,
        collapse_mode=ft.collapse_mode,
        use_special_tokens=ft.use_special_tokens,
        dropout=ft.dropout,
        freeze_encoder=not ft.finetune_all,
    ).to(device)

    # loss, optimiser, schedule (steps = optimizer updates)
    weights = None if task.regression else torch.from_numpy(class_weights(task, splits["train"].labels)).to(device)
    train = enc["train"]
    total_updates = ft.epochs * math.ceil(math.ceil(len(train) / ft.batch_size) / ft.accum_iters)
    optimizer = build_optimizer(ft.optimizer, param_groups(model, ft.weight_decay), lr=ft.lr, weight_decay=ft.weight_decay)
    scheduler = build_schedule(
        ft.schedule,
        optimizer,
        warmup_steps=ft.warmup_steps if ft.schedule == "noam" else min(ft.warmup_steps, total_updates),
        total_steps=total_updates,
        hidden_size=encoder.config.hidden_size,
        scale=ft.lr,  # noam only: a multiplier on the formula, as training.lr
    )
    trainer = Trainer(model, build_loss(ft.loss, task.task_type, weights), optimizer, scheduler, ft.accum_iters, ft.clip_grad_norm,
                      device, autocast, max_bad_steps=ft.max_bad_steps, name=name)
    evaluate = lambda split: evaluate_split(  # noqa: E731
        model, enc[split], splits[split].labels, task, batch_size=ft.pred_batch_size, device=device, autocast=autocast
    )

    # resume from the newest good checkpoint of this very run, if any
    checkpoints = EpochCheckpoints(checkpoint_dir or default_checkpoint_dir(model_out), run_config, say=lambda m: _say(name, m))
    tracker = BestTracker(ft.patience)
    best_state: dict[str, torch.Tensor] | None = None
    best_dev: dict[str, Any] = {}
    history: list[dict[str, Any]] = []
    logged: list[list] = []  # [epoch, metrics] as given to log_fn, replayed on resume
    epoch, stopped, resumed_from = 0, False, None
    resumed = checkpoints.resume(model, optimizer, scheduler, rng)
    if resumed is not None:
        st = resumed.state
        tracker.best_score, tracker.best_epoch, tracker.since_best = st["tracker"]
        trainer.restore(st["counters"])
        best_state, best_dev, history, logged = resumed.best_state, st["best_dev"], st["history"], st["logged"]
        epoch = resumed_from = st["epoch"]
        stopped = st["stopped"]
        if log_fn is not None:
            for e, m in logged:
                log_fn(m, e)

    # epochs: train, score dev, keep the best weights, checkpoint
    while not stopped and epoch < ft.epochs:
        epoch += 1
        batches = bucketed_batches(train.lengths, ft.batch_size, rng)
        train_loss = trainer.train_epoch(train, batches, progress=progress, desc=f"{name} epoch {epoch}/{ft.epochs}")
        _, dev_metrics = evaluate("dev")
        score = selection_score(dev_metrics, task)
        is_best = tracker.update(score, epoch)
        if is_best:
            best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            best_dev = dev_metrics
        dev_scalars = scalar_metrics(dev_metrics)
        lr = optimizer.param_groups[0]["lr"]
        history.append({"epoch": epoch, "train_loss": train_loss, "lr": lr, "dev_score": score, **{f"dev_{k}": v for k, v in dev_scalars.items()}})
        logged.append([epoch, {"train.loss": train_loss, "lr": lr, "dev.selection": score, **{f"dev.{k}": v for k, v in dev_scalars.items()}}])
        stopped = tracker.should_stop
        _say(name, f"epoch {epoch}/{ft.epochs}: train loss {train_loss:.4f}, dev {selection_metric(task)} {score:.4f}"
                   + (" (best so far)" if is_best else f" (best: epoch {tracker.best_epoch}, {tracker.best_score:.4f})")
                   + (", early stop" if stopped else ""))
        state = {"tracker": [tracker.best_score, tracker.best_epoch, tracker.since_best], "counters": trainer.counters(),
                 "best_dev": best_dev, "history": history, "logged": logged, "stopped": stopped}
        checkpoints.save(epoch, model, optimizer, scheduler, rng, None if is_best else best_state, state)
        if log_fn is not None:
            log_fn(logged[-1][1], epoch)

    # the best-dev weights, evaluated once on test, saved with the reports
    assert best_state is not None  # the first epoch is always a best
    if not all_finite(best_state):  # cannot happen with the update guard; refuse rather than save NaN
        raise NonFiniteTrainingError(f"tasks.{name}: the best-dev weights (epoch {tracker.best_epoch}) are not finite; nothing saved")
    model.load_state_dict(best_state)
    test_probs, test_metrics = evaluate("test")
    info = {
        "task": name,
        "task_type": task.task_type,
        "labels": dict(task.categories),
        "multi_label_format": task.multi_label_format if task.multi_label else None,
        "label_separator": task.label_separator,
        "threshold": task.threshold if task.multi_label else None,
        "max_len": ft.max_len,
        "text_pair": task.aux_header is not None,
        "normalize": _rules_dict(rules),
        "finetuning": to_dict(ft),
        "encoder_source": source,
        "best_epoch": tracker.best_epoch,
    }
    save_finetuned(model_out, model, tokenizer_path, info)
    summary = {
        "task": name,
        "task_type": task.task_type,
        "selection_metric": selection_metric(task),
        "seed": ft.seed,
        "best_epoch": tracker.best_epoch,
        "best_dev_score": tracker.best_score if math.isfinite(tracker.best_score) else None,
        "epochs_run": epoch,
        "stopped_early": epoch < ft.epochs,
        "skipped_updates": trainer.skipped,
        "train_examples": len(train),
        "train_tokens": trainer.tokens,
        "device": device.type,
        "data": data_counts(splits),  # per split: rows_in = rows_used + sum(rejected), rows in rejects.tsv
    }
    run_info = {  # changes on every run: not a DVC metric
        "train_seconds": round(trainer.seconds, 3),
        "train_tokens_per_s": round(trainer.tokens / trainer.seconds, 1) if trainer.seconds > 0 else 0.0,
        "total_seconds": round(time.perf_counter() - t_start, 3),
        "resumed_from_epoch": resumed_from,
        "checkpoint_dir": str(checkpoints.root),
    }
    report_out = Path(report_out)
    report_out.mkdir(parents=True, exist_ok=True)
    write_metrics(report_out, summary, best_dev, test_metrics)
    write_class_report(report_out, task, best_dev, test_metrics)
    write_confusion(report_out, task, splits["test"].labels, test_probs)
    write_predictions(report_out, task, splits["test"], test_probs)
    write_history(report_out, history)
    write_rejects(report_out, splits)
    write_json(report_out / RUN_INFO_FILE, run_info)
    if clear_checkpoints:
        checkpoints.clear()
    return {**summary, "dev": scalar_metrics(best_dev), "test": scalar_metrics(test_metrics), "dev_selection": tracker.best_score,
            "test_selection": selection_score(test_metrics, task), "run_info": run_info}


__all__ = [
    "NonFiniteTrainingError",
    "Trainer",
    "autocast_for",
    "build_encoder",
    "default_checkpoint_dir",
    "evaluate_split",
    "finetune_task",
    "predict_batches",
    "resolve_device",
]
