"""Per-epoch fine-tuning checkpoints: a run killed at any moment resumes where it was.

Layout (``root`` is ``finetune_task``'s ``checkpoint_dir``; the stage uses
``models/finetune/.checkpoints/<task>``, not a DVC output, so DVC leaves it alone)::

    root/epoch-0003/
        model.safetensors   the weights after epoch 3 (safetensors: no pickle)
        best.safetensors    the best-dev weights so far; absent when epoch 3 itself is the best
        trainer_state.pt    optimizer, lr schedule and RNG states (torch CPU/CUDA, numpy global,
                            python, and the epoch-order numpy Generator); tensors and plain types
                            only, loaded with ``torch.load(weights_only=True)``
        state.json          epoch, history, logged rows, best epoch/score/dev metrics, counters, run config
        checksums.json      sha256 of every file above

Writes are atomic at the directory level: everything goes into ``root/.tmp-epoch-0003-<uuid>/``
(each file fsynced, ``checksums.json`` last), which is then renamed to ``epoch-0003``. A kill during
the write leaves a ``.tmp-*`` directory, ignored and removed by the next save. The last
:data:`KEEP` checkpoints are kept, so a checkpoint that fails its checksums (truncated, bit rot) is
reported and the previous one is used; so is one whose files cannot be read back at all (a damaged
``checksums.json`` or ``state.json``, read through :mod:`twilbert.metadata`, or tensors that do not load).

A checkpoint of another run config (:func:`twilbert.finetune.train.finetune_task`'s run config: its
fingerprint covers settings, data, tokenizer, rules, model, initial weights and code; ``impl`` is left
out, it changes speed only), or of this one that does not fit the current code, is never resumed:
the differing keys are printed and ``root`` is moved aside to ``<root>-stale-<time>`` (the
:data:`KEEP_STALE` newest kept) by the run store (:mod:`twilbert.train.run_store`), and training
starts afresh. Not an error: ``root`` persists across ``dvc repro`` runs, and changing params is the
normal way to start a new experiment.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from twilbert.metadata import fields, parse_json, read_json, validate
from twilbert.train.checkpoint import CheckpointError, config_differences, read_checksums
from twilbert.train.checkpoint import rng_state as global_rng_state
from twilbert.train.checkpoint import set_rng_state as global_set_rng_state
from twilbert.train.run_store import fingerprint, listing, move_aside, numbered_dirs
from twilbert.utils import atomic_write, atomic_write_text, fsync_dir, sha256_file

KEEP = 2
KEEP_STALE = 2  # moved-aside checkpoint directories of older run configs kept per task
MODEL_FILE = "model.safetensors"
BEST_FILE = "best.safetensors"
TRAINER_FILE = "trainer_state.pt"
STATE_FILE = "state.json"
CHECKSUMS_FILE = "checksums.json"
_EPOCH_DIR = re.compile(r"^epoch-(\d{4,})$")
_STATE_FIELDS = fields(required={"epoch": int, "fingerprint": str}, optional={"run_config": (dict, None)})


def tensors_sha256(state: dict[str, torch.Tensor]) -> str:
    """sha256 over names, dtypes, shapes and bytes of a state dict (the initial encoder weights)."""
    h = hashlib.sha256()
    for k in sorted(state):
        t = state[k].detach().to("cpu").contiguous().reshape(-1)
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def all_finite(state: dict[str, torch.Tensor]) -> bool:
    return all(bool(torch.isfinite(v).all()) for v in state.values() if v.is_floating_point())


# --------------------------------------------------------------------------------------------------
# RNG states as tensors and plain types (weights_only-loadable)


def rng_state(generator: np.random.Generator) -> dict[str, Any]:
    """The global RNG states (:func:`twilbert.train.checkpoint.rng_state`) and the epoch-order generator's."""
    return {**global_rng_state(), "generator": json.dumps(generator.bit_generator.state)}  # PCG64 state: ints wider than 64 bits


def set_rng_state(state: dict[str, Any], generator: np.random.Generator) -> None:
    global_set_rng_state(state)
    generator.bit_generator.state = parse_json(state["generator"], "trainer_state.pt (rng.generator)", error=CheckpointError)


# --------------------------------------------------------------------------------------------------
# files


def _read_tensors(directory: Path, has_best: bool) -> tuple[dict, dict, dict]:
    """Weights, best weights and trainer state of a verified checkpoint; anything that does not load
    (or lacks a part :meth:`EpochCheckpoints.resume` restores) is a :class:`CheckpointError`."""
    path = directory / MODEL_FILE
    try:
        weights = load_file(str(path))
        path = directory / BEST_FILE
        best = load_file(str(path)) if has_best else weights
        path = directory / TRAINER_FILE
        trainer = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # safetensors header errors, unpickling refusals, truncation...
        raise CheckpointError(f"{path}: cannot be loaded ({' '.join(str(exc).split())[:200]})") from None
    if not isinstance(trainer, dict) or not all(isinstance(trainer.get(k), dict) for k in ("optimizer", "scheduler", "rng")) \
            or not isinstance(trainer["rng"].get("generator"), str):
        raise CheckpointError(f"{path}: not a fine-tuning trainer state (optimizer, scheduler and rng states expected)")
    parse_json(trainer["rng"]["generator"], f"{path} (rng.generator)", error=CheckpointError)
    return weights, best, trainer


def _cpu_copy(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # clones: safetensors refuses tensors that share storage
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in state.items()}


def _misfit(model: torch.nn.Module, optimizer: torch.optim.Optimizer, weights: dict, best: dict, trainer: dict) -> str | None:
    """Why a checkpoint cannot be loaded into these objects (checked before anything is loaded, so a
    misfit leaves the fresh model untouched); None when it fits."""
    current = model.state_dict()
    for name, stored in (("weights", weights), ("best weights", best)):
        missing, unexpected = sorted(set(current) - set(stored)), sorted(set(stored) - set(current))
        if missing or unexpected:
            return f"{name}: missing {missing[:5]}, unexpected {unexpected[:5]}"
        shapes = [k for k in current if tuple(current[k].shape) != tuple(stored[k].shape)]
        if shapes:
            return f"{name}: other shapes for {shapes[:5]}"
    groups = trainer.get("optimizer", {}).get("param_groups", [])
    if [len(g["params"]) for g in groups] != [len(g["params"]) for g in optimizer.param_groups]:
        return "optimizer parameter groups differ"
    return None


@dataclass
class Resumed:
    """What a verified checkpoint restores besides the weights, optimizer, schedule and RNGs."""

    directory: Path
    state: dict[str, Any]  # state.json
    best_state: dict[str, torch.Tensor]


class EpochCheckpoints:
    """The checkpoints of one run under ``root``; ``say`` prints user-facing messages."""

    def __init__(self, root: str | Path, run_config: dict[str, Any], say=None, state_schema=None) -> None:
        """``state_schema``: checks the caller's part of a resumable checkpoint's ``state.json`` (a
        :func:`twilbert.metadata.read_json` schema); one that fails it is unusable."""
        self.root = Path(root)
        self.state_schema = state_schema
        self.run_config = json.loads(json.dumps(run_config, sort_keys=True, default=str))
        self.fingerprint = fingerprint(self.run_config)
        self.say = say or (lambda msg: print(msg, file=sys.stderr, flush=True))

    def list(self) -> list[Path]:
        """``epoch-*`` directories, oldest first."""
        return numbered_dirs(self.root, _EPOCH_DIR)

    # ---------------------------------------------------------------- save

    def save(
        self,
        epoch: int,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        generator: np.random.Generator,
        best_state: dict[str, torch.Tensor] | None,
        state: dict[str, Any],
    ) -> Path:
        """Write ``epoch-XXXX`` atomically; ``best_state`` None = the current weights are the best.
        Refuses non-finite weights (they are never saved)."""
        weights = _cpu_copy(model.state_dict())
        if not all_finite(weights) or (best_state is not None and not all_finite(best_state)):
            raise CheckpointError(f"{self.root}: refusing to save non-finite weights after epoch {epoch}")
        self.root.mkdir(parents=True, exist_ok=True)
        for stale in self.root.glob(".tmp-*"):  # an interrupted earlier save
            shutil.rmtree(stale, ignore_errors=True)
        final = self.root / f"epoch-{epoch:04d}"
        tmp = self.root / f".tmp-{final.name}-{uuid.uuid4().hex}"
        tmp.mkdir()
        try:
            files = [MODEL_FILE, TRAINER_FILE, STATE_FILE]
            atomic_write(tmp / MODEL_FILE, lambda t: save_file(weights, str(t), metadata={"format": "pt"}))
            if best_state is not None:
                atomic_write(tmp / BEST_FILE, lambda t: save_file(_cpu_copy(best_state), str(t), metadata={"format": "pt"}))
                files.append(BEST_FILE)
            trainer = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng_state(generator)}
            atomic_write(tmp / TRAINER_FILE, lambda t: torch.save(trainer, t))
            full = {**state, "epoch": epoch, "fingerprint": self.fingerprint, "run_config": self.run_config}
            # key order kept: the history's columns come back as they were written
            atomic_write_text(tmp / STATE_FILE, json.dumps(full, indent=1) + "\n")
            checksums = {f: sha256_file(tmp / f) for f in files}
            atomic_write_text(tmp / CHECKSUMS_FILE, json.dumps(checksums, indent=2, sort_keys=True) + "\n")
            if final.exists():  # a re-run of this epoch after falling back to an older checkpoint
                shutil.rmtree(final)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        fsync_dir(self.root)
        for old in self.list()[:-KEEP]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    # ---------------------------------------------------------------- load

    def _verify(self, directory: Path) -> dict[str, Any]:
        path = directory / CHECKSUMS_FILE
        checksums = read_checksums(path)
        for f in (MODEL_FILE, TRAINER_FILE, STATE_FILE):
            if f not in checksums:
                raise CheckpointError(f"{path}: does not list {f}")
        for f, want in checksums.items():
            p = directory / f
            if not p.is_file():
                raise CheckpointError(f"{p}: missing")
            try:
                got = sha256_file(p)
            except OSError as exc:
                raise CheckpointError(f"{p}: cannot read ({exc.strerror or exc})") from None
            if got != want:
                raise CheckpointError(f"{p}: sha256 {got[:12]}… does not match {CHECKSUMS_FILE} ({want[:12]}…); file corrupted")
        return checksums

    def _move_aside(self, stored: dict[str, Any], reason: str | None = None) -> None:
        if reason is None:
            diffs = listing(config_differences(stored, self.run_config)) or "(no run config stored)"
            reason = f"checkpoints in {self.root} belong to a different run ({diffs})"
        move_aside(self.root, reason, KEEP_STALE, say=self.say)

    def resume(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        generator: np.random.Generator,
    ) -> Resumed | None:
        """Restore the newest good checkpoint of this run into the given objects; None = start afresh.

        Newest first: one that fails verification is reported and the previous one tried. The first
        verified one decides: same fingerprint -> resume from it; another fingerprint -> move ``root``
        aside (see the module docstring) and start afresh."""
        for directory in reversed(self.list()):
            try:
                checksums = self._verify(directory)
                state = read_json(directory / STATE_FILE, schema=_STATE_FIELDS, error=CheckpointError, allow_nan=True)
                if state["fingerprint"] == self.fingerprint:
                    if self.state_schema is not None:
                        validate(state, str(directory / STATE_FILE), self.state_schema, error=CheckpointError)
                    weights, best, trainer = _read_tensors(directory, BEST_FILE in checksums)
            except CheckpointError as exc:
                self.say(f"checkpoint {directory} is unusable ({exc}); falling back to the previous one")
                continue
            if state["fingerprint"] != self.fingerprint:
                self._move_aside(state.get("run_config") or {})
                return None
            misfit = _misfit(model, optimizer, weights, best, trainer)
            if misfit:  # same run config, other code (a changed model or optimizer): not resumable
                self._move_aside(state.get("run_config") or {}, reason=f"{directory} does not fit this code ({misfit})")
                return None
            model.load_state_dict(weights)
            optimizer.load_state_dict(trainer["optimizer"])
            scheduler.load_state_dict(trainer["scheduler"])
            for group, lr in zip(optimizer.param_groups, scheduler.get_last_lr()):
                group["lr"] = lr
            set_rng_state(trainer["rng"], generator)
            self.say(f"resuming from {directory} (epoch {state['epoch']} done)")
            return Resumed(directory=directory, state=state, best_state={k: v.clone() for k, v in best.items()})
        if self.list():
            self.say(f"no usable checkpoint in {self.root}; starting afresh")
        return None

    def clear(self) -> None:
        """After a finished run: remove its checkpoints, keep ``root`` (a DVC output must exist)."""
        if not self.root.is_dir():
            return
        for p in self.list():  # renamed first (atomic), so a kill mid-delete leaves no half checkpoint
            os.replace(p, self.root / f".tmp-cleared-{p.name}-{uuid.uuid4().hex}")
        for p in self.root.glob(".tmp-*"):
            shutil.rmtree(p, ignore_errors=True)


__all__ = ["EpochCheckpoints", "KEEP", "Resumed", "all_finite", "fingerprint", "rng_state", "set_rng_state", "tensors_sha256"]
