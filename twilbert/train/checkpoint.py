"""Checkpoints: plain, portable, verified.

A checkpoint is a directory::

    model.safetensors   weights (no pickle; tied weights stored once)
    config.json         the config dict the model was built from (resolved sizes included)
    trainer_state.pt    optional: optimizer, scheduler, RNG states, extra (step, epoch, data cursor...)
    checksums.json      sha256 of each file above, written last

Every file is written atomically (temp file in the same directory, fsync, ``os.replace``, fsync of
the directory), and ``checksums.json`` is removed first and written last, so a crash mid-save leaves
a checkpoint that refuses to load (missing or mismatching checksums) instead of a silently torn one.
``trainer_state.pt`` holds only tensors and plain Python types, so it loads with
``torch.load(weights_only=True)``: loading a checkpoint never runs pickled code. Every JSON file is
read through :func:`twilbert.metadata.read_json`: damage of any kind is a one-line
:class:`CheckpointError`, which resumption treats as an unusable checkpoint. A model directory's
``config.json`` is validated like params (:func:`model_config`) before anything is allocated.

The original saved whole Keras models (``.hdf5``) every epoch and every hour (see docs/deviations.md), and
resuming needed the step passed by hand (``initial_batch``).
"""

from __future__ import annotations

import json
import os
import random
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_model, save_model
from torch import nn

from twilbert.config import ConfigError, check_bounds, from_dict
from twilbert.metadata import fields, read_json
from twilbert.utils import atomic_write
from twilbert.utils import sha256_file as _sha256

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
TRAINER_FILE = "trainer_state.pt"
CHECKSUMS_FILE = "checksums.json"


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, incomplete, corrupted or does not match what the caller expects."""


class ConfigMismatchError(CheckpointError):
    """The stored config differs from the expected one; ``differences`` lists (key, stored, expected)."""

    def __init__(self, directory: Path, differences: list[tuple[str, Any, Any]]) -> None:
        self.differences = differences
        lines = "\n".join(f"  {key}: stored {stored!r}, expected {expected!r}" for key, stored, expected in differences)
        super().__init__(f"{directory / CONFIG_FILE}: config differs from the expected one in {len(differences)} key(s):\n{lines}")


# --------------------------------------------------------------------------------------------------
# RNG states as tensors / plain types (weights_only-loadable)


def rng_state() -> dict[str, Any]:
    """The torch (and CUDA), numpy-global and python RNG states, as tensors and plain types."""
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state(legacy=True)
    py_version, py_internal, py_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": np_kind,
            "keys": torch.from_numpy(np_keys.astype(np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "cached_gaussian": float(np_gauss),
        },
        "python": {"version": py_version, "internal": torch.tensor(py_internal, dtype=torch.int64), "gauss_next": py_gauss},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(x) for x in p["internal"].tolist()), p["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)


# --------------------------------------------------------------------------------------------------
# config comparison


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, Mapping) and tree:
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: tree}


_MISSING = "<missing>"


def config_differences(stored: Mapping, expected: Mapping) -> list[tuple[str, Any, Any]]:
    """``[(dotted key, stored value, expected value)]`` for every key that differs; ``<missing>`` marks
    a key present on one side only. Both sides are compared in their JSON form (tuples == lists)."""
    a = _flatten(json.loads(json.dumps(stored)))
    b = _flatten(json.loads(json.dumps(expected)))
    return [(k, a.get(k, _MISSING), b.get(k, _MISSING)) for k in sorted(a.keys() | b.keys()) if a.get(k, _MISSING) != b.get(k, _MISSING)]


# --------------------------------------------------------------------------------------------------
# save / load


def save_checkpoint(
    directory: str | os.PathLike,
    model: nn.Module,
    config_dict: Mapping[str, Any],
    *,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    rng: bool = True,
    extra: Mapping[str, Any] | None = None,
    on_write: Callable[[Path], None] | None = None,
) -> Path:
    """Write a checkpoint into ``directory`` (created if needed; an older checkpoint there is replaced).

    ``config_dict`` must be JSON-serialisable (``twilbert.config.to_dict(cfg)``). ``extra`` must hold
    tensors and plain Python values only (ints, floats, str, lists, dicts, None), as ``weights_only``
    loading requires. ``trainer_state.pt`` is written when any of optimizer/scheduler/rng/extra is given.
    ``on_write(path)`` is called as each file's temp file is complete, before it is renamed to
    ``path`` (the crash tests kill the process there). Returns the directory.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)

    def write_file(path: Path, write: Callable[[Path], None]) -> None:
        if on_write is None:
            return atomic_write(path, write)
        return atomic_write(path, lambda tmp: (write(tmp), on_write(path)))

    (directory / CHECKSUMS_FILE).unlink(missing_ok=True)  # the checkpoint is incomplete until the end

    written = [MODEL_FILE, CONFIG_FILE]
    # save_model drops the duplicate names of tied (shared-storage) tensors, which safetensors'
    # plain save_file refuses; load_model restores them.
    write_file(directory / MODEL_FILE, lambda tmp: save_model(model, str(tmp), metadata={"format": "pt"}))
    config_text = json.dumps(config_dict, indent=2, sort_keys=True) + "\n"
    write_file(directory / CONFIG_FILE, lambda tmp: tmp.write_text(config_text, encoding="utf-8"))

    trainer_path = directory / TRAINER_FILE
    if optimizer is not None or scheduler is not None or rng or extra:
        state = {
            "optimizer": optimizer.state_dict() if optimizer is not None else None,
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "rng": rng_state() if rng else None,
            "extra": dict(extra) if extra else {},
        }
        write_file(trainer_path, lambda tmp: torch.save(state, tmp))
        written.append(TRAINER_FILE)
    else:
        trainer_path.unlink(missing_ok=True)  # a stale one from an older save would not match

    checksums = {name: _sha256(directory / name) for name in written}
    write_file(directory / CHECKSUMS_FILE, lambda tmp: tmp.write_text(json.dumps(checksums, indent=2) + "\n"))
    return directory


def verify_checkpoint(directory: str | os.PathLike, files: tuple[str, ...] = (MODEL_FILE, CONFIG_FILE)) -> None:
    """Raise :class:`CheckpointError` unless every file in ``files`` exists and matches checksums.json."""
    directory = Path(directory)
    checksums_path = directory / CHECKSUMS_FILE
    if not checksums_path.is_file():
        raise CheckpointError(f"{directory}: no {CHECKSUMS_FILE}; not a checkpoint, or an interrupted save")
    checksums = read_checksums(checksums_path)
    for name in files:
        path = directory / name
        if name not in checksums:
            raise CheckpointError(f"{path}: not listed in {CHECKSUMS_FILE} (not part of this checkpoint)")
        if not path.is_file():
            raise CheckpointError(f"{path}: missing")
        try:
            actual = _sha256(path)
        except OSError as exc:
            raise CheckpointError(f"{path}: cannot read ({exc.strerror or exc})") from None
        if actual != checksums[name]:
            raise CheckpointError(f"{path}: sha256 {actual} does not match {CHECKSUMS_FILE} ({checksums[name]}); file corrupted")


_SHA256 = re.compile(r"[0-9a-f]{64}")


def _check_checksums(checksums: dict) -> None:
    for name, digest in checksums.items():
        if not name or "/" in name or "\\" in name or name in (".", ".."):
            raise ConfigError(f"{name!r}: not a file name of the checkpoint")
        if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
            raise ConfigError(f"{name}: expected a sha256 (64 hex digits), got {str(digest)[:40]!r}")


def read_checksums(path: str | os.PathLike) -> dict[str, str]:
    """A ``checksums.json``: ``{file name: sha256}``; anything else is a :class:`CheckpointError`."""
    return read_json(path, schema=_check_checksums, error=CheckpointError)


def read_config(directory: str | os.PathLike, *, verify: bool = True) -> dict[str, Any]:
    """The stored ``config.json`` (checksum-verified unless ``verify=False``): a JSON object, not
    checked further (a model directory's: :func:`read_model_config`)."""
    directory = Path(directory)
    if verify:
        verify_checkpoint(directory, (CONFIG_FILE,))
    return read_json(directory / CONFIG_FILE, error=CheckpointError)


def model_config(stored: Mapping[str, Any], where: str | os.PathLike = CONFIG_FILE, *, memory: int | None = None):
    """The ModelConfig a model directory's ``config.json`` holds (``{"model": {...}, ...}`` or the model
    dict itself), checked as strictly as params: types, ranges (``MODEL_BOUNDS``), sizes resolved, and
    the weights (fp32) within this machine's RAM (``memory``, default: detected). Raises a one-line
    :class:`CheckpointError` naming ``where`` and the key: ``vocab_size: 1e12`` fails here, before
    torch tries to allocate terabytes."""
    from twilbert.model.config import ModelConfig
    from twilbert.model.size import MODEL_BOUNDS, machine_memory_bytes, parameter_count

    d = stored.get("model") if isinstance(stored.get("model"), dict) else stored
    try:
        cfg = from_dict(ModelConfig, dict(d), "model")
        for key in ("vocab_size", "max_positions"):
            if getattr(cfg, key) is None:
                raise ConfigError(f"model.{key}: missing (a saved model stores it resolved)")
        check_bounds(cfg, MODEL_BOUNDS, "model")
    except ConfigError as exc:
        raise CheckpointError(f"{where}: not a usable TWilBERT model config: {exc}") from None
    memory = machine_memory_bytes() if memory is None else memory
    n = sum(parameter_count(cfg).values())
    if memory and 4 * n > memory:
        raise CheckpointError(f"{where}: the model has {n:,} parameters ({4 * n / 2**30:,.1f} GiB in fp32), more than "
                              f"this machine's {memory / 2**30:,.1f} GiB of RAM; refusing to load it")
    return cfg


def read_model_config(directory: str | os.PathLike, *, verify: bool = True):
    """``(config.json as a dict, its ModelConfig)`` of a model directory, validated (:func:`model_config`)."""
    stored = read_config(directory, verify=verify)
    return stored, model_config(stored, Path(directory) / CONFIG_FILE)


PRETRAIN_META = "pretrain.json"  # beside a pre-trained checkpoint's config.json: tokenizer, rules, provenance


def read_pretrain_meta(directory: str | os.PathLike) -> dict[str, Any]:
    """A pre-trained checkpoint's ``pretrain.json`` (written by the pretrain stage or import-hf: tokenizer
    path and sha256, normalisation rules, where it was imported from), ``{}`` when it has none."""
    path = Path(directory) / PRETRAIN_META
    return read_json(path, schema=_PRETRAIN_FIELDS, error=CheckpointError) if path.is_file() or path.is_symlink() else {}


_PRETRAIN_FIELDS = fields(optional={"tokenizer_path": (str, None), "tokenizer_sha256": (str, None), "normalize": (dict, None),
                                    "step": int, "epochs": float, "fingerprint": str, "run_config": (dict, None),
                                    "imported_from": str, "hf_model_type": str, "hf_hidden_act": str})


def load_checkpoint(
    directory: str | os.PathLike,
    model: nn.Module,
    expected_config: Mapping[str, Any] | None = None,
    *,
    strict: bool = True,
) -> dict[str, Any]:
    """Load weights into ``model`` after verifying checksums and (optionally) the config.

    Raises :class:`CheckpointError` on missing/corrupted files or missing/unexpected weights (with
    ``strict``), and :class:`ConfigMismatchError` listing every differing key (dotted path, stored vs
    expected) when ``expected_config`` is given and differs. Returns the stored config dict.
    """
    directory = Path(directory)
    verify_checkpoint(directory, (MODEL_FILE, CONFIG_FILE))
    stored = read_config(directory, verify=False)
    if expected_config is not None:
        differences = config_differences(stored, expected_config)
        if differences:
            raise ConfigMismatchError(directory, differences)
    try:
        missing, unexpected = load_model(model, directory / MODEL_FILE, strict=False)
    except Exception as exc:  # shape mismatches, bad header...
        raise CheckpointError(f"{directory / MODEL_FILE}: cannot load into {type(model).__name__}: {exc}") from exc
    if strict and (missing or unexpected):
        raise CheckpointError(f"{directory / MODEL_FILE}: missing weights {sorted(missing)}, unexpected weights {sorted(unexpected)}")
    return stored


def load_trainer_state(
    directory: str | os.PathLike,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    *,
    restore_rng: bool = True,
) -> dict[str, Any]:
    """Restore optimizer, scheduler and (by default) the torch/numpy/python RNGs; return ``extra``.

    Loads with ``torch.load(weights_only=True)``; the optimizer state moves to its parameters' device.
    Asking for a part the checkpoint does not hold raises :class:`CheckpointError`.
    """
    directory = Path(directory)
    verify_checkpoint(directory, (TRAINER_FILE,))
    try:
        state = torch.load(directory / TRAINER_FILE, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{directory / TRAINER_FILE}: cannot load with weights_only=True: {exc}") from exc
    for name, obj in (("optimizer", optimizer), ("scheduler", scheduler)):
        if obj is None:
            continue
        if state.get(name) is None:
            raise CheckpointError(f"{directory / TRAINER_FILE}: holds no {name} state")
        obj.load_state_dict(state[name])
    if scheduler is not None and hasattr(scheduler, "get_last_lr"):
        # The lr for the next update, whatever order the optimizer and scheduler were built/loaded in
        # (building a LambdaLR after loading the optimizer would otherwise reset the lr to lambda(0)).
        for group, lr in zip(scheduler.optimizer.param_groups, scheduler.get_last_lr()):
            group["lr"] = lr
    if restore_rng and state.get("rng") is not None:
        set_rng_state(state["rng"])
    return state.get("extra") or {}


__all__ = [
    "CHECKSUMS_FILE",
    "CONFIG_FILE",
    "CheckpointError",
    "ConfigMismatchError",
    "MODEL_FILE",
    "TRAINER_FILE",
    "config_differences",
    "load_checkpoint",
    "load_trainer_state",
    "model_config",
    "read_checksums",
    "read_config",
    "read_model_config",
    "rng_state",
    "save_checkpoint",
    "set_rng_state",
    "verify_checkpoint",
]
