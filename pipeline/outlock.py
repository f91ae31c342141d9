"""One writer per output: an exclusive lock beside each stage's out dir, and a stop when DVC dies.

Why: a ``kill -9`` of ``dvc repro`` orphaned the stage process, which kept writing into ``data/pairs``
for ~35 s after a rerun had checked out the cached outputs; nothing kept two commands from writing
one directory. A stage calls :func:`lock_outputs` once, before it writes:

* The lock is ``flock`` on ``.<name>.writer.lock`` *beside* the out dir (``data/.pairs.writer.lock``),
  not inside it: DVC caches everything inside an ``outs`` directory and removes it before a run.
  ``.gitignore`` and ``.dvcignore`` ignore these files (``reports/finetune``, which holds the
  per-task locks, is a dep of ``report``: a lock file must not change its hash).
* The kernel drops a ``flock`` when its holder dies, ``kill -9`` included, so no stale lock is ever
  left; the file holds the holder's PID, which a second writer names when it fails (at once).
* Under DVC (``DVC_STAGE`` set), the nearest ``dvc`` ancestor process is watched and its death stops
  the stage with SIGTERM: ``PR_SET_PDEATHSIG`` when dvc is the direct parent, and a poll every 0.5 s,
  since dvc runs the command through ``$SHELL -c`` and the shell may stay in between (it survives
  dvc's death). The ancestor is identified by PID *and* start time, so a reused PID is not mistaken
  for it. Linux only (``/proc``, ``prctl``); elsewhere only the lock applies.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import signal
import sys
import threading
import time
from pathlib import Path

LOCK_SUFFIX = ".writer.lock"  # matched by .gitignore and .dvcignore: .*.writer.lock
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
POLL_S = 0.5

_held: dict[Path, int] = {}  # resolved out dir -> fd of its locked file, for this process
_watching = False


class OutputBusyError(Exception):
    """Another process holds the output's lock (one-line message naming its PID)."""


def lock_path(out: Path) -> Path:
    """``<parent>/.<name>.writer.lock`` for out dir ``<parent>/<name>`` (symlinks resolved, so two
    spellings of one directory share one lock)."""
    out = Path(out).resolve()
    return out.parent / f".{out.name}{LOCK_SUFFIX}"


def acquire(out: Path) -> None:
    """Lock ``out`` for this process until :func:`release` or exit; idempotent per directory."""
    key = Path(out).resolve()
    if key in _held:
        return
    path = lock_path(out)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise OutputBusyError(f"{out}: cannot create the lock file {path}: {exc.strerror or exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(fd)
        os.close(fd)
        raise OutputBusyError(
            f"{out}: another process ({holder}) is writing this output; wait for it to end or stop it (lock: {path})"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()} {' '.join(_argv(os.getpid()))}\n".encode("utf-8", "replace"), 0)
    _held[key] = fd


def release(out: Path) -> None:
    """Drop this process's lock on ``out`` (the lock file stays: removing it would race a new holder)."""
    fd = _held.pop(Path(out).resolve(), None)
    if fd is not None:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _holder(fd: int) -> str:
    """``PID 1234: python -m pipeline.cli pairs ...`` from a held lock file; the holder writes it right
    after locking, so an empty file is retried briefly."""
    for _ in range(10):
        text = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
        if text:
            pid, _, command = text.partition(" ")
            return f"PID {pid}" + (f": {command[:120]}" if command else "")
        time.sleep(0.02)
    return "PID unknown"


def _argv(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode("utf-8", "replace") for a in raw.split(b"\0") if a]


# --------------------------------------------------------------------------------------------------
# Parent watch: stop when the dvc process that started this stage dies.
# --------------------------------------------------------------------------------------------------


def _stat(pid: int) -> tuple[str, int, int] | None:
    """``(state, ppid, start time)`` of a live process from ``/proc/<pid>/stat``; None when gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # the command name may hold spaces and parentheses
    return fields[0], int(fields[1]), int(fields[19])  # state, ppid, starttime (stat fields 3, 4, 22)


def is_dvc(argv: list[str]) -> bool:
    """``dvc ...``, ``python /venv/bin/dvc ...`` or ``python -m dvc ...``."""
    if any(os.path.basename(a) in ("dvc", "dvc.exe") for a in argv[:2]):
        return True
    return "-m" in argv[:3] and argv.index("-m") + 1 < len(argv) and argv[argv.index("-m") + 1] == "dvc"


def dvc_ancestor(pid: int | None = None) -> tuple[int, int] | None:
    """``(pid, start time)`` of the nearest ancestor of ``pid`` (default: this process) that is dvc."""
    current = _stat(os.getpid() if pid is None else pid)
    for _ in range(64):
        if current is None or current[1] <= 1:
            return None
        parent = current[1]
        argv = _argv(parent)
        current = _stat(parent)
        if current is not None and is_dvc(argv):
            return parent, current[2]
    return None


def alive(pid: int, start: int) -> bool:
    """The process ``pid`` started at ``start`` still runs (a zombie or a reused PID does not)."""
    stat = _stat(pid)
    return stat is not None and stat[0] not in ("Z", "X") and stat[2] == start


def watch_dvc_parent(poll_s: float = POLL_S) -> None:
    """Under DVC, SIGTERM this process as soon as its dvc ancestor dies (started once per process)."""
    global _watching
    if _watching or not os.environ.get("DVC_STAGE") or not sys.platform.startswith("linux"):
        return
    ancestor = dvc_ancestor()
    if ancestor is None:
        return
    _watching = True
    pid, start = ancestor
    if pid == os.getppid():
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if not alive(pid, start):  # died before the watch began
        os.kill(os.getpid(), signal.SIGTERM)

    def watch() -> None:
        while alive(pid, start):
            time.sleep(poll_s)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="dvc-parent-watch", daemon=True).start()


def lock_outputs(*outs: Path) -> None:
    """The stage's one call: lock its out dirs for the rest of the command (a busy one exits 2 with
    one line) and, under DVC, stop when dvc dies. Under torchrun only rank 0 locks (it writes)."""
    from pipeline.common import fail

    watch_dvc_parent()
    if os.environ.get("RANK", "0") != "0":
        return
    taken: list[Path] = []
    try:
        for out in outs:
            if Path(out).resolve() not in _held:
                acquire(out)
                taken.append(out)
    except OutputBusyError as exc:
        for out in taken:
            release(out)
        fail(str(exc))
    ctx = _command_context()
    if ctx is not None:  # released when the command ends (CliRunner runs many in one process)
        ctx.call_on_close(lambda: [release(out) for out in taken])


def _command_context():
    """The running Typer/Click command's context, or None (typer >= 0.16 vendors its own click)."""
    import importlib

    for module in ("typer._click.globals", "click.globals"):
        try:
            ctx = importlib.import_module(module).get_current_context(silent=True)
        except ImportError:
            continue
        if ctx is not None:
            return ctx
    return None
