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

Each update runs through the shared loop (:mod:`twilbert.train.loop`) with the task loss as its
objective (:class:`twilbert.train.objectives.TaskLoss`); an update with a NaN/inf loss or gradient is
skipped and counted, and ``run.max_bad_steps`` of them in a row stop the run with
:class:`TrainingDivergedError`. Where this loop differs from the original's, see docs/deviations.md.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch

from twilbert.config import ConfigError, to_dict
from twilbert.finetune.checkpoint import EpochCheckpoints, all_finite, tensors_sha256
from twilbert.finetune.config import FinetuningConfig, TaskConfig, effective_finetuning
from twilbert.finetune.data import data_counts, load_task
from twilbert.finetune.epochs import EpochLoop, LogFn, Trainer, check_resume_state, say
from twilbert.finetune.inputs import EncodedSplit, collate, encode_split, eval_batches
from twilbert.finetune.losses import build_loss
from twilbert.finetune.metrics import compute_metrics, selection_metric, selection_score
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
from twilbert.progress import Progress
from twilbert.text.normalize import EffectiveRules, NormalizeRules
from twilbert.text.tokenizer import Tokenizer, tokenizer_file
from twilbert.train.config import ImplConfig, RunConfig
from twilbert.train.loop import TrainingDivergedError
from twilbert.train.optim import build_optimizer, param_groups
from twilbert.train.run_store import code_sha256
from twilbert.train.runtime import autocast as runtime_autocast
from twilbert.train.runtime import autocast_dtype, resolve_device
from twilbert.train.schedules import build_schedule
from twilbert.utils import sha256_file



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
            with Progress(len(data), desc, "texts", enabled=progress) as bar:
                for idx in batches:
                    b = collate(data, idx).to(device)
                    with autocast():
                        y = model(b.input_ids, b.token_type_ids, b.attention_mask)  # (B, C)
                    out[idx] = y.float().cpu().numpy()
                    bar.update(len(idx))
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


def _rules_dict(rules: EffectiveRules | NormalizeRules | None) -> dict | None:
    if rules is None:
        return None
    return to_dict(rules.effective() if isinstance(rules, NormalizeRules) else rules)


# --------------------------------------------------------------------------------------------------
# one epoch, one evaluation


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
    """sha256 of the code this module runs: in the run config, so that a checkpoint left by an
    interrupted run is not resumed by edited code (:func:`twilbert.train.run_store.code_sha256`)."""
    return code_sha256(__name__)


def default_checkpoint_dir(model_out: str | Path) -> Path:
    """``<model_out>/../.checkpoints/<model_out name>``: ``models/finetune/.checkpoints/<task>`` for the
    stage (not a DVC output in dvc.yaml, so DVC leaves it alone and an interrupted run resumes from it)."""
    model_out = Path(model_out)
    return model_out.parent / ".checkpoints" / model_out.name


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
    run: RunConfig | None = None,
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

    ``impl`` and ``run`` are speed and bookkeeping (``impl.pred_batch_size``, ``run.max_bad_steps``): not
    in the run config. ``finetuning`` are the section defaults: the task's own overrides are applied here
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
    impl, run = impl or ImplConfig(), run or RunConfig()
    if impl.num_threads:
        torch.set_num_threads(impl.num_threads)
    device = resolve_device(impl.device, error=ConfigError)
    autocast = functools.partial(runtime_autocast, device, autocast_dtype(impl.precision, device))
    tokenizer_path = tokenizer_file(tokenizer_path)  # models/vocab -> the spm.model / tokenizer.json in it
    tokenizer = Tokenizer.from_file(tokenizer_path)
    splits = load_task(task, data_root, name=name)  # repeated ids quarantined (or an error): task.repeated_ids
    torch.manual_seed(ft.seed)
    rng = np.random.default_rng(ft.seed)
    if encoder_factory is not None:
        encoder, source = encoder_factory(), "encoder_factory"
    else:
        encoder, source = build_encoder(ft, pretrained_dir=pretrained_dir, model_config=model_config, attention=impl.attention)
    _check_encoder(encoder, source, tokenizer, tokenizer_path, ft, task, name)
    run_config = _run_config(task, ft, splits, tokenizer, rules, encoder)
    enc = {s: encode_split(splits[s], tokenizer, max_len=ft.max_len, rules=rules, num_threads=impl.tokenizer_threads) for s in splits}
    trainer = _build_trainer(name, task, ft, encoder, splits, enc["train"], device, autocast, run.max_bad_steps)
    evaluate = lambda split: evaluate_split(  # noqa: E731
        trainer.model, enc[split], splits[split].labels, task, batch_size=impl.pred_batch_size, device=device, autocast=autocast
    )
    checkpoints = EpochCheckpoints(checkpoint_dir or default_checkpoint_dir(model_out), run_config, say=lambda m: say(name, m),
                                   state_schema=check_resume_state)
    epochs = EpochLoop(name, task, ft, trainer, checkpoints, evaluate, rng, log_fn, progress)
    epochs.resume()
    epochs.train(enc["train"])
    return _finish(epochs, splits, evaluate, tokenizer_path, rules, source, model_out, report_out, t_start, clear_checkpoints)


def _check_encoder(encoder: TWilBERT, source: str, tokenizer: Tokenizer, tokenizer_path: Path, ft: FinetuningConfig, task: TaskConfig, name: str) -> None:
    """The encoder must fit the inputs, and a pre-trained one must have been trained with this vocabulary."""
    _check_fits(encoder, tokenizer, ft, task, name)
    if source not in ("random", "encoder_factory"):
        sha = pretrained_tokenizer_sha256(source)
        if sha is not None and sha != tokenizer.sha256:
            raise ConfigError(
                f"tasks.{name}: {tokenizer_path} is not the vocabulary the encoder in {source} was pre-trained with "
                f"(sha256 {tokenizer.sha256[:12]} vs {sha[:12]})"
            )


def _run_config(task: TaskConfig, ft: FinetuningConfig, splits: dict, tokenizer: Tokenizer, rules, encoder: TWilBERT) -> dict[str, Any]:
    """Everything that determines the fine-tuned weights: its fingerprint names the run's checkpoints."""
    return {
        "task": to_dict(task),
        "finetuning": to_dict(ft),
        "data_sha256": {s: sha256_file(splits[s].path) for s in splits},
        "tokenizer_sha256": tokenizer.sha256,
        "normalize": _rules_dict(rules),
        "model": to_dict(encoder.config),
        "initial_encoder_sha256": tensors_sha256(encoder.state_dict()),
        "code_sha256": finetune_code_sha256(),
    }


def _build_trainer(name: str, task: TaskConfig, ft: FinetuningConfig, encoder: TWilBERT, splits: dict, train: EncodedSplit, device, autocast,
                   max_bad_steps: int) -> Trainer:
    """Classifier, loss, optimiser and schedule (steps = optimizer updates)."""
    model = SequenceClassifier(
        encoder,
        task.n_outputs,
        collapse_mode=ft.collapse_mode,
        use_special_tokens=ft.use_special_tokens,
        dropout=ft.dropout,
        freeze_encoder=not ft.finetune_all,
    ).to(device)
    weights = task.kind.class_weights(task, splits["train"].labels)  # (C,) or None (a type without classes)
    weights = None if weights is None else torch.from_numpy(weights).to(device)
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
    return Trainer(model, build_loss(ft.loss, task.task_type, weights), optimizer, scheduler, ft.accum_iters, ft.clip_grad_norm,
                   device, autocast, max_bad_steps=max_bad_steps, name=name)


def _finish(run: EpochLoop, splits: dict, evaluate, tokenizer_path: Path, rules, source: str, model_out, report_out, t_start: float,
            clear_checkpoints: bool) -> dict[str, Any]:
    """The best-dev weights, evaluated once on test, saved with the reports; returns the summary."""
    name, task, ft, trainer, tracker = run.name, run.task, run.ft, run.trainer, run.tracker
    assert run.best_state is not None  # the first epoch is always a best
    if not all_finite(run.best_state):  # cannot happen with the update guard; refuse rather than save NaN
        raise TrainingDivergedError(f"tasks.{name}: the best-dev weights (epoch {tracker.best_epoch}) are not finite; nothing saved")
    trainer.model.load_state_dict(run.best_state)
    test_probs, test_metrics = evaluate("test")
    info = {
        "task": name,
        "task_type": task.task_type,
        "labels": dict(task.categories),
        **task.kind.saved_info(task),  # multi_label_format, threshold: None where the type has none
        "label_separator": task.label_separator,
        "max_len": ft.max_len,
        "text_pair": task.aux_header is not None,
        "normalize": _rules_dict(rules),
        "finetuning": to_dict(ft),
        "encoder_source": source,
        "best_epoch": tracker.best_epoch,
    }
    save_finetuned(model_out, trainer.model, tokenizer_path, info)
    summary = {
        "task": name,
        "task_type": task.task_type,
        "selection_metric": selection_metric(task),
        "seed": ft.seed,
        "best_epoch": tracker.best_epoch,
        "best_dev_score": tracker.best_score if math.isfinite(tracker.best_score) else None,
        "epochs_run": run.epoch,
        "stopped_early": run.epoch < ft.epochs,
        "skipped_updates": trainer.skipped,
        "train_examples": run.train_examples,
        "train_tokens": trainer.tokens,
        "device": trainer.device.type,
        "data": data_counts(splits),  # per split: rows_in = rows_used + sum(rejected), rows in rejects.tsv
    }
    run_info = {  # changes on every run: not a DVC metric
        "train_seconds": round(trainer.seconds, 3),
        "train_tokens_per_s": round(trainer.tokens / trainer.seconds, 1) if trainer.seconds > 0 else 0.0,
        "total_seconds": round(time.perf_counter() - t_start, 3),
        "resumed_from_epoch": run.resumed_from,
        "checkpoint_dir": str(run.checkpoints.root),
    }
    _write_reports(Path(report_out), task, summary, run.best_dev, test_metrics, splits, test_probs, run.history, run_info)
    if clear_checkpoints:
        run.checkpoints.clear()
    return {**summary, "dev": scalar_metrics(run.best_dev), "test": scalar_metrics(test_metrics), "dev_selection": tracker.best_score,
            "test_selection": selection_score(test_metrics, task), "run_info": run_info}


def _write_reports(report_out: Path, task: TaskConfig, summary: dict, best_dev: dict, test_metrics: dict, splits: dict, test_probs: np.ndarray,
                   history: list, run_info: dict) -> None:
    report_out.mkdir(parents=True, exist_ok=True)
    write_metrics(report_out, summary, best_dev, test_metrics)
    write_class_report(report_out, task, best_dev, test_metrics)
    write_confusion(report_out, task, splits["test"].labels, test_probs)
    write_predictions(report_out, task, splits["test"], test_probs)
    write_history(report_out, history)
    write_rejects(report_out, splits)
    write_json(report_out / RUN_INFO_FILE, run_info)


__all__ = [
    "Trainer",
    "TrainingDivergedError",
    "build_encoder",
    "default_checkpoint_dir",
    "evaluate_split",
    "finetune_task",
    "predict_batches",
]
