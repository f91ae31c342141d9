"""What may go into committed results: nothing that changes when an unchanged pipeline runs again.

DVC commits the metrics files and records every output's hash in ``dvc.lock``. A wall time or a
throughput in one of them makes every ``make repro`` modify tracked files, so a user cannot tell what
their run changed. Those figures (:data:`TIMING_KEYS`) go to MLflow, which every stage logs them to,
and to ``logs/timing.json`` (git-ignored; one entry per stage, merged): :func:`split_timing`,
:func:`record_timing`. Floats in committed metrics are rounded to :data:`DIGITS` significant digits
(:func:`rounded`), so that summation-order noise (another thread count, another CPU) does not show.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

TIMING_PATH = Path("logs/timing.json")
TIMING_KEYS = ("wall_s", "seconds", "train_seconds", "total_seconds", "tokens_per_s", "train_tokens_per_s", "padded_tokens_per_s", "mfu", "mfu_padded",
               "resumed_from_step", "resumed_from_epoch")  # where a run resumed: a fact of this run, like its clock
DIGITS = 6


def split_timing(values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(what a rerun reproduces, the timings)`` of a flat dict."""
    return ({k: v for k, v in values.items() if k not in TIMING_KEYS}, {k: v for k, v in values.items() if k in TIMING_KEYS})


def rounded(obj: Any, digits: int = DIGITS) -> Any:
    """Floats (also nested in dicts and lists) to ``digits`` significant digits; the rest unchanged."""
    if isinstance(obj, float):
        return obj if not math.isfinite(obj) or obj == 0 else float(f"{obj:.{digits}g}")
    if isinstance(obj, dict):
        return {k: rounded(v, digits) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [rounded(v, digits) for v in obj]
    return obj


def read_timing(path: Path | None = None) -> dict[str, Any]:
    """``logs/timing.json`` as a dict ({} when missing or unreadable)."""
    path = TIMING_PATH if path is None else path
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def record_timing(entries: dict[str, Any], path: Path | None = None) -> Path | None:
    """Merge ``entries`` (top-level keys, e.g. ``{"pretrain": {...}}``) into ``logs/timing.json``.
    Never raises: a timing that cannot be written is a warning, not a failed stage."""
    path = TIMING_PATH if path is None else path
    try:
        from twilbert.utils import atomic_write_text

        old = read_timing(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps({**old, **entries}, indent=2, default=str, allow_nan=True) + "\n")
        return path
    except (OSError, ValueError) as exc:
        warnings.warn(f"could not write {path} ({exc}); the timings are in MLflow", stacklevel=2)
        return None


__all__ = ["DIGITS", "TIMING_KEYS", "TIMING_PATH", "read_timing", "record_timing", "rounded", "split_timing"]
