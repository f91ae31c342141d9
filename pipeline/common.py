"""Shared plumbing for stage commands: params loading, one-line errors, MLflow run per stage.

Stages stay thin: parse options, ``load(...)``, call one core function inside ``tracked(...)``, write
outputs. Errors the user can fix (bad params, bad input file) print one line naming the key or path
and exit with status 2, and so do failed reads and writes (a full disk, a read-only directory: "path:
no space left on device", :func:`io_error_line`); anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno
import os
import re
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import typer

from twilbert.config import ConfigError
from twilbert.utils import ERRNO_IN_TEXT as _ERRNO_IN_TEXT  # where libraries hide an errno in their message

PARAMS_OPTION = typer.Option("params.yaml", "--params", "-p", help="Path to params.yaml.", dir_okay=False)


class StageError(Exception):
    """A user-facing failure with a one-line message."""


def user_errors() -> tuple[type[BaseException], ...]:
    from twilbert.text.corpus_layout import CorpusError

    errs: list[type[BaseException]] = [ConfigError, StageError, CorpusError]
    # Only modules already imported can have raised: looking them up in sys.modules keeps a failing
    # light stage (normalize, vocab) from importing torch just to build this tuple.
    for module, name in (
        ("twilbert.train.checkpoint", "CheckpointError"),  # damaged / foreign checkpoints and model dirs
        ("twilbert.data.shard_format", "ShardError"),  # missing / altered pair shards (a --shards-dir never written)
        ("twilbert.train.loop", "TrainingDivergedError"),  # NaN/inf steps: the message names the params to change
        ("twilbert.text.tokenizer", "TokenizerError"),  # not a SentencePiece model, or not the model's / shards'
    ):
        err = getattr(sys.modules.get(module), name, None)
        if err is not None:
            errs.append(err)
    return tuple(errs)


def fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=2)


def require_normalized(normalized_dir: Path) -> tuple[Path, Path]:
    """``(pairs.parquet, tweets.parquet)`` of the normalize stage's output; exits with a one-line
    message when the directory, or both files, are missing (one of the two may be absent)."""
    files = (normalized_dir / "pairs.parquet", normalized_dir / "tweets.parquet")
    if not normalized_dir.is_dir():
        fail(f"{normalized_dir}: no such directory (--normalized-dir: the normalize stage's output, with "
             f"{files[0].name} and/or {files[1].name})")
    if not any(f.exists() for f in files):
        fail(f"{normalized_dir}: neither {files[0].name} nor {files[1].name} exists (run the normalize stage first)")
    return files


def load_tokenizer(vocab_model: Path):
    """The vocab stage's tokenizer (``models/vocab``, or the spm.model / tokenizer.json in it); a
    missing or unusable one exits with a one-line message naming it."""
    if not vocab_model.exists():
        fail(f"{vocab_model}: no vocabulary model (run the vocab stage first)")
    from twilbert.text.tokenizer import Tokenizer

    return run_guarded(Tokenizer.from_file, vocab_model)


def refuse_columns_on_stdin(**columns: str | None) -> None:
    """stdin is one text per line: a column option (``aux_column="b"`` -> ``--aux-column``) has nothing
    to take a second text or an id from, so it is an error rather than silently ignored."""
    for name, value in columns.items():
        if value is not None:
            fail(f"--{name.replace('_', '-')}: stdin has no columns (one text per line); use --input FILE with a header")


def load(params_path: Path):
    """Load params; a bad config exits with a one-line message naming the key.

    Inside a DVC experiment the failure is also recorded in MLflow (a FAILED run for the stage, the
    message as a tag), because a queued experiment with bad params would otherwise fail before any
    run exists, visible only in ``dvc queue status``."""
    from pipeline.params import load_params

    try:
        return load_params(params_path)
    except ConfigError as exc:
        _record_config_failure(params_path, str(exc))
        fail(str(exc))


def _record_config_failure(params_path: Path, message: str) -> None:
    """A FAILED MLflow stage run for a params error, when DVC runs the stage in an experiment."""
    stage = os.environ.get("DVC_STAGE")
    if not stage or not os.environ.get("DVC_EXP_NAME"):
        return
    from pipeline.tracking import stage_run

    try:
        # DVC names foreach stages `finetune@sentiment`; our runs are `finetune:sentiment`.
        with stage_run(stage.replace("@", ":"), params_path, {}) as tracker:
            tracker.set_tags({"twilbert.error": message[:5000]})
            raise StageError(message)
    except StageError:
        pass
    except Exception:  # noqa: BLE001 - recording a failure must never hide the failure itself
        pass


def progress_enabled(params) -> bool:
    """``impl.progress``: a bar on a terminal, status lines otherwise (twilbert.progress decides which)."""
    return bool(params.impl.progress)


@contextmanager
def tracked(
    stage: str,
    params_path: Path,
    params,
    sections: tuple[str, ...],
    fallback: Path | None = None,
    group: str | None = None,
) -> Iterator:
    """An MLflow child run for this stage, logging exactly the params sections it reads
    (:data:`pipeline.stage_params.STAGE_PARAMS`); the parent run gets every recipe section.

    Yields a :class:`pipeline.tracking.Tracker`. It never raises for tracking problems and never stalls
    for long: a locked or unreachable store gives one warning and the metrics go to ``fallback`` (JSONL),
    replayed into MLflow when the store is back at the end of the stage.

    Distributed runs: when the environment variable ``RANK`` is set and is not ``"0"`` (torchrun's
    workers other than rank 0), the tracker is disabled: ``active`` is False, nothing is sent to MLflow
    and nothing is written to ``fallback``, so every ``log_*`` call is a cheap no-op. Stages may call it
    on every rank; only rank 0 records.

    ``group`` names the MLflow grid this run belongs to (default: params ``tracking.group`` when that key
    exists; ``TWILBERT_GRID`` overrides both; see :func:`pipeline.tracking.grid_name`).
    """
    from pipeline.params import flat_params
    from pipeline.stage_params import recipe_sections
    from pipeline.tracking import stage_run

    with stage_run(
        stage,
        params_path,
        flat_params(params, *sections),
        all_params_flat=flat_params(params, *recipe_sections(params)),  # impl/run/tracking are not params
        experiment=params.tracking.experiment,
        enabled=params.tracking.enabled,
        fallback=fallback,
        group=group if group is not None else (getattr(params.tracking, "group", None) or None),
    ) as tracker:
        yield tracker


def run_guarded(fn, *args, **kwargs):
    """Call a stage body, turning user-facing errors into one-line messages (exit 2)."""
    with guarded():
        return fn(*args, **kwargs)


@contextmanager
def guarded() -> Iterator[None]:
    """:func:`run_guarded` for a block: user errors and I/O errors become one line and exit 2."""
    try:
        yield
    except user_errors() as exc:
        fail(str(exc))
    except (typer.Exit, typer.Abort):
        raise
    except Exception as exc:
        line = io_error_line(exc)
        if line is None:
            raise
        fail(line)


def io_error_line(exc: BaseException) -> str | None:
    """``"path: no space left on device"`` for an exception that is a failed read or write, else None.

    Looks through the chain (``__cause__`` / ``__context__``) for an ``OSError`` or an errno in a
    library's message; torch's ``RuntimeError ... unexpected pos`` (``torch.save`` on a full disk)
    carries neither, and is reported as the full disk it almost always is. The path is the error's
    ``filename``, or the one :func:`twilbert.utils.name_path` attached."""
    chain, e = [], exc
    while e is not None and len(chain) < 16:
        chain.append(e)
        e = e.__cause__ or e.__context__
    path = next((str(c.filename) for c in chain if isinstance(c, OSError) and c.filename), None)
    path = path or next((c.twilbert_path for c in chain if getattr(c, "twilbert_path", None)), None)
    code = next((c.errno for c in chain if isinstance(c, OSError) and c.errno), None)
    if code is None:
        found = next((m for c in chain if (m := _ERRNO_IN_TEXT.search(str(c)))), None)
        code = int(next(g for g in found.groups() if g)) if found else None
    if code is not None:
        cause = os.strerror(code)
        cause = cause[0].lower() + cause[1:]
    elif any("unexpected pos" in str(c) for c in chain):
        cause = f"{os.strerror(errno.ENOSPC).lower()}, most likely (torch: {' '.join(str(exc).split())[-80:]})"
    elif any(isinstance(c, OSError) for c in chain):
        first = next(c for c in chain if isinstance(c, OSError))
        cause = " ".join((first.strerror or str(first) or type(first).__name__).split())
    else:
        return None
    return f"{path or 'a file'}: {cause}"


_DEVICE = re.compile(r"cpu|auto|mps|cuda(:\d+)?")


def check_device(device: str) -> None:
    """A one-line error for a --device torch cannot use here (``gpu``, ``cuda:3`` on a 1-GPU machine...)."""
    if not _DEVICE.fullmatch(device):
        fail(f"--device: expected cpu, cuda, cuda:N, mps or auto, got {device!r}")
    if device in ("cpu", "auto"):
        return
    import torch

    if device == "mps":
        if not torch.backends.mps.is_available():
            fail("--device: mps requested but no MPS device is available (use cpu or auto)")
        return
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        fail(f"--device: {device} requested but no CUDA device is available (use cpu or auto)")
    index = int(device.partition(":")[2] or 0)
    if index >= count:
        fail(f"--device: {device} requested but there are {count} CUDA device(s) (cuda:0..cuda:{count - 1})")
