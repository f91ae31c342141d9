"""Where runs keep their checkpoints, and which one a run resumes from.

A *run config* is the dict of everything that determines a run's weights (the caller builds it); its
:func:`fingerprint` names the run. A checkpoint of one run config is never resumed by another.

Pre-training keeps one directory per run config, pruned to the newest :data:`KEEP_RUNS`::

    root/<fingerprint[:16]>/run.json           the run config, for humans
    root/<fingerprint[:16]>/step-XXXXXXXX/     its last checkpoints

:func:`choose_resume_checkpoint` picks the checkpoint to resume (rules in docs/pretraining.md,
"Checkpoints and config changes"). Fine-tuning keeps one directory per task and moves it aside
(:func:`move_aside`) when the run config changes. Both list numbered checkpoint directories with
:func:`numbered_dirs` and fall back past a checkpoint that fails its checksums.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from twilbert.metadata import fields, parse_json, read_json
from twilbert.train.checkpoint import (
    CONFIG_FILE,
    MODEL_FILE,
    TRAINER_FILE,
    CheckpointError,
    ConfigMismatchError,
    config_differences,
    verify_checkpoint,
)
from twilbert.utils import atomic_write_text, source_sha256

RUN_FILE = "run.json"  # in root/<fingerprint[:16]>/: the run config of that directory
KEEP_CHECKPOINTS = 2  # per run config
KEEP_RUNS = 3  # run-config directories kept under root (the current one included)
STEP_DIR = re.compile(r"^step-(\d{8})$")
_RUN_DIR = re.compile(r"^[0-9a-f]{16}$")

Say = Callable[[str], None]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class RunConfigMismatchError(ConfigMismatchError):
    """A checkpoint to resume from was written by a different run config; ``differences`` lists
    ``(dotted key, in the checkpoint, in params)``."""

    def __init__(self, directory: Path, differences: list, hint: str = "") -> None:
        self.differences = differences
        lines = "\n".join(f"  {key}: checkpoint {stored!r}, params {expected!r}" for key, stored, expected in differences)
        message = f"{directory}: checkpoint of a different run config; {len(differences)} key(s) differ:\n{lines}"
        CheckpointError.__init__(self, message + (f"\n{hint}" if hint else ""))


# --------------------------------------------------------------------------------------------------
# run identity


def code_sha256(module: str) -> str:
    """sha256 of the code ``module`` runs (itself and every ``twilbert`` module it imports).

    Why in the run config: a ``dvc repro`` after a code edit reruns the stage; without the hash it would
    find the old code's checkpoint under the same params and resume (or publish) it. With it, new code
    is a new run, and the old one's checkpoints are kept."""
    return source_sha256(module)


def fingerprint(run_config: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(run_config, sort_keys=True, default=str).encode()).hexdigest()


def differences(stored: dict | None, expected: dict) -> list:
    """``config_differences`` of two run configs; a checkpoint without one differs as a whole."""
    return config_differences(stored, expected) if stored else [("run_config", "<not stored>", "<params>")]


def listing(diffs: list) -> str:
    return "; ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in diffs)


# --------------------------------------------------------------------------------------------------
# directories


def numbered_dirs(root: str | Path, pattern: re.Pattern = STEP_DIR) -> list[Path]:
    """Directories directly under ``root`` whose name matches ``pattern`` (one number group), oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := pattern.match(p.name))]
    return [p for _, p in sorted(found)]


def list_checkpoints(root: str | Path) -> list[Path]:
    """``step-XXXXXXXX`` directories directly under ``root`` (a run directory), oldest first."""
    return numbered_dirs(root, STEP_DIR)


def step_of(directory: Path) -> int:
    return int(STEP_DIR.match(directory.name).group(1))


def run_dir(root: str | Path, fingerprint_: str) -> Path:
    """``root/<fingerprint[:16]>``: the checkpoints of one run config."""
    return Path(root) / fingerprint_[:16]


def list_runs(root: str | Path) -> list[Path]:
    """Run-config directories under ``root``, least recently written first (directory mtime)."""
    if not Path(root).is_dir():
        return []
    runs = [p for p in Path(root).iterdir() if p.is_dir() and _RUN_DIR.match(p.name)]
    return sorted(runs, key=lambda p: (p.stat().st_mtime_ns, p.name))


def write_run_file(directory: Path, fingerprint_: str, config: dict | None) -> None:
    """``directory/run.json`` (once): the run config whose checkpoints the directory holds."""
    path = directory / RUN_FILE
    if not path.is_file():
        atomic_write_text(path, json.dumps({"fingerprint": fingerprint_, "run_config": config}, indent=2, sort_keys=True) + "\n")


def prune_checkpoints(directory: Path, keep: int = KEEP_CHECKPOINTS) -> None:
    for old in list_checkpoints(directory)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def prune_runs(root: Path, keep: Path, say: Say = _stderr) -> None:
    """Delete the run-config directories of ``root`` beyond the newest ``KEEP_RUNS`` (``keep`` stays)."""
    others = [r for r in list_runs(root) if r.name != keep.name]
    for old in others[: max(0, len(others) - (KEEP_RUNS - 1))]:
        say(f"removing the checkpoints of an older run config: {old}")
        shutil.rmtree(old, ignore_errors=True)


def move_aside(root: Path, reason: str, keep_stale: int, say: Say = _stderr) -> None:
    """Rename ``root`` to ``<root>-stale-<time>`` and keep only the ``keep_stale`` newest such directories."""
    # Names sort by time (nanoseconds within the second), which the pruning below relies on.
    stale = root.with_name(f"{root.name}-stale-{time.strftime('%Y%m%d-%H%M%S')}-{time.time_ns() % 10**9:09d}")
    say(f"{reason}; moving them to {stale} and starting afresh")
    shutil.move(str(root), str(stale))
    for old in sorted(root.parent.glob(f"{root.name}-stale-*"))[:-keep_stale]:
        shutil.rmtree(old, ignore_errors=True)


# --------------------------------------------------------------------------------------------------
# choosing the checkpoint to resume


_EXTRA_FIELDS = fields(required={"state": str, "fingerprint": str}, optional={"run_config": str, "history": str})
_EXTRA_JSON = {"state": dict, "run_config": dict, "history": list}  # extra's JSON strings and their kinds


def read_extra(directory: Path) -> dict:
    """The ``extra`` dict of a verified checkpoint, without restoring anything (memory-mapped read),
    with everything resuming reads from it checked: a checkpoint that fails is unusable."""
    verify_checkpoint(directory, (MODEL_FILE, CONFIG_FILE, TRAINER_FILE))
    path = directory / TRAINER_FILE
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:
        raise CheckpointError(f"{path}: unreadable: {' '.join(str(exc).split())[:200]}") from None
    extra = state.get("extra") if isinstance(state, dict) else None
    if not isinstance(extra, dict):
        raise CheckpointError(f"{path}: not a trainer state (no extra dict)")
    try:
        _EXTRA_FIELDS(extra)
    except ValueError as exc:
        raise CheckpointError(f"{path}: extra.{exc}") from None
    for key, kind in _EXTRA_JSON.items():
        if key in extra:
            parse_json(extra[key], f"{path} (extra.{key})", kind=kind, error=CheckpointError, allow_nan=key == "history")
    return extra


def newest_usable(directory: Path, *, quiet: bool = False, say: Say = _stderr) -> tuple[Path, dict] | None:
    """The newest ``step-*`` checkpoint in ``directory`` that verifies, with its ``extra``; a corrupt or
    torn one is reported (unless ``quiet``) and the previous one tried. None if there is none."""
    for ckpt in reversed(list_checkpoints(directory)):
        try:
            return ckpt, read_extra(ckpt)
        except CheckpointError as exc:
            if not quiet:
                say(f"checkpoint {ckpt.name} is unusable ({exc}); falling back to the previous one")
    return None


def _stored_run_config(extra: dict) -> dict | None:
    """The run config in a checkpoint's ``extra`` (checked by :func:`read_extra`)."""
    return parse_json(extra["run_config"], "extra.run_config", error=CheckpointError) if extra.get("run_config") else None


_RUN_FIELDS = fields(required={"run_config": (dict, None)}, optional={"fingerprint": str})


def _explicit(source: Path, want: str, expected: dict, say: Say) -> Path:
    """The checkpoint ``run.resume_from`` names, checked against the run config."""
    if STEP_DIR.match(source.name):
        found = (source, read_extra(source))  # an unusable explicit checkpoint is an error, not a fallback
    else:
        found = newest_usable(source, say=say)
        if found is None:
            raise CheckpointError(f"run.resume_from={str(source)!r}: no usable step-* checkpoint there")
    if found[1].get("fingerprint") != want:
        diffs = differences(_stored_run_config(found[1]), expected)
        if [k for k, _, _ in diffs] != ["code_sha256"]:
            raise RunConfigMismatchError(found[0], diffs, "run.resume_from must name a checkpoint of the same run config")
        say(f"run.resume_from={str(source)!r} was written by other training code (code_sha256 "
            f"{str(diffs[0][1])[:12]} -> {str(diffs[0][2])[:12]}); resuming it under this code, as asked")
    return found[0]


def _other_config(root: Path, want: str, expected: dict, on_config_change: str, say: Say) -> None:
    """Report (or, with ``on_config_change == "error"``, refuse) the newest other config's checkpoints."""
    other = next((r for r in reversed(list_runs(root)) if r.name != want[:16] and list_checkpoints(r)), None)
    if other is None:
        return
    try:  # its run.json: no checkpoint hashing here
        stored = read_json(other / RUN_FILE, schema=_RUN_FIELDS, error=CheckpointError)["run_config"]
    except CheckpointError as exc:  # only used to list the differences
        say(f"ignoring {exc}")
        stored = None
    diffs = differences(stored, expected)
    if on_config_change == "error":
        code_only = [k for k, _, _ in diffs] == ["code_sha256"]
        raise RunConfigMismatchError(
            other,
            diffs,
            "run.on_config_change is 'error': set it to 'restart' to train this config from scratch "
            "(the other config's checkpoints are kept), or restore the params"
            + (f"; only the code differs: to continue that run under this code, set run.resume_from={str(other)!r}" if code_only else ""),
        )
    say(f"no checkpoint of this run config; the newest other one in {root} differs ({listing(diffs)}); starting fresh, keeping it")


def choose_resume_checkpoint(
    root: Path, expected: dict, *, resume_from: str | Path | None = None, on_config_change: str = "restart", say: Say = _stderr
) -> Path | None:
    """The checkpoint to resume from, or None to train from scratch.

    Raises :class:`RunConfigMismatchError` listing the differing keys when ``resume_from`` holds a
    checkpoint of another run config (a difference in code alone is reported and resumed), or when
    ``on_config_change == "error"`` and ``root`` has checkpoints of other configs but none of this one.
    A newer checkpoint of this config in ``root`` wins over ``resume_from``.
    """
    root = Path(root)
    want = fingerprint(expected)
    own = newest_usable(run_dir(root, want), say=say)
    if own is not None and own[1].get("fingerprint") != want:  # a directory copied by hand, or tampered with
        diffs = differences(_stored_run_config(own[1]), expected)
        raise RunConfigMismatchError(own[0], diffs, "it sits in the directory of the params' run config")
    if resume_from:
        explicit = _explicit(Path(resume_from), want, expected, say)
        if own is not None and step_of(own[0]) >= step_of(explicit):
            say(f"{own[0]} is newer than run.resume_from={str(resume_from)!r}; resuming from it")
            return own[0]
        return explicit
    if own is not None:
        return own[0]
    _other_config(root, want, expected, on_config_change, say)
    return None


__all__ = [
    "KEEP_CHECKPOINTS",
    "KEEP_RUNS",
    "RUN_FILE",
    "RunConfigMismatchError",
    "choose_resume_checkpoint",
    "code_sha256",
    "differences",
    "fingerprint",
    "list_checkpoints",
    "list_runs",
    "move_aside",
    "newest_usable",
    "numbered_dirs",
    "prune_checkpoints",
    "prune_runs",
    "read_extra",
    "run_dir",
    "step_of",
    "write_run_file",
]
