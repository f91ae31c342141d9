"""One writer per output (pipeline/outlock.py): a second writer fails at once naming the holder's PID,
the lock dies with its holder, and a stage whose dvc process is killed stops within seconds."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from pipeline import outlock
from pipeline.outlock import OutputBusyError, acquire, alive, is_dvc, lock_outputs, lock_path, release

REPO = Path(__file__).resolve().parents[2]
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and prctl are Linux-only")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DVC_STAGE", "RANK")}
    return {**env, "PYTHONPATH": str(REPO), **extra}


def _holder(out: Path, tmp_path: Path) -> subprocess.Popen:
    """A process that locks ``out`` and sleeps; returns once the lock is held."""
    script = f"from pipeline.outlock import acquire; acquire({str(out)!r}); print('ready', flush=True); import time; time.sleep(120)"
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def _wait_dead(pid: int, within_s: float) -> bool:
    """``pid`` exited (or is a zombie nobody reaped) within ``within_s`` seconds."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        stat = outlock._stat(pid)
        if stat is None or stat[0] in ("Z", "X"):
            return True
        time.sleep(0.05)
    return False


def test_the_lock_file_sits_beside_the_out_dir_and_is_ignored_by_git_and_dvc(tmp_path):
    out = tmp_path / "data" / "pairs"
    assert lock_path(out) == tmp_path.resolve() / "data" / ".pairs.writer.lock"
    acquire(out)
    try:
        assert lock_path(out).is_file() and not out.exists()  # nothing is created inside (or as) the out dir
        assert lock_path(out).read_text().split()[0] == str(os.getpid())
    finally:
        release(out)
    for name in (".gitignore", ".dvcignore"):
        assert ".*.writer.lock" in (REPO / name).read_text().splitlines(), name
    ignored = subprocess.run(["git", "check-ignore", "-q", "reports/finetune/.sentiment.writer.lock"], cwd=REPO)
    assert ignored.returncode == 0


def test_a_second_writer_fails_at_once_naming_the_holder_pid(tmp_path):
    out = tmp_path / "out"
    holder = _holder(out, tmp_path)
    try:
        start = time.monotonic()
        with pytest.raises(OutputBusyError) as exc:
            acquire(out)
        assert time.monotonic() - start < 1.0  # does not wait for the holder
        msg = str(exc.value)
        assert f"PID {holder.pid}" in msg and str(out) in msg and "\n" not in msg, msg
        # Another spelling of the same directory is the same lock.
        with pytest.raises(OutputBusyError):
            acquire(tmp_path / "x" / ".." / "out")
    finally:
        holder.kill()
        holder.wait()
    acquire(out)  # the kernel dropped the lock with its holder (kill -9): no stale lock to clean up
    release(out)


def test_a_stage_command_exits_2_with_one_line_when_its_output_is_busy(tmp_path):
    """Through a stage's own line (``lock_outputs(out_dir)``): typer exit 2, one line naming the PID;
    within one process, the lock is released when the command ends (CliRunner runs many)."""

    stage = typer.Typer()

    @stage.command()
    def main(out: Path) -> None:
        lock_outputs(out)
        typer.echo("wrote")

    out = tmp_path / "busy"
    holder = _holder(out, tmp_path)
    try:
        result = CliRunner().invoke(stage, [str(out)])
        assert result.exit_code == 2
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert len(lines) == 1 and f"PID {holder.pid}" in lines[0] and "Traceback" not in result.output, result.output
    finally:
        holder.kill()
        holder.wait()
    free = tmp_path / "free"
    for _ in range(2):  # the second run is not refused by the first one's lock
        result = CliRunner().invoke(stage, [str(free)])
        assert result.exit_code == 0 and "wrote" in result.output, result.output
    assert free.resolve() not in outlock._held


def test_other_ranks_do_not_lock(tmp_path, monkeypatch):
    """Under torchrun only rank 0 writes: the other ranks must not fight it for the lock."""
    out = tmp_path / "ranked"
    holder = _holder(out, tmp_path)
    try:
        monkeypatch.setenv("RANK", "1")
        lock_outputs(out)  # no error, no lock taken
        assert out.resolve() not in outlock._held
    finally:
        holder.kill()
        holder.wait()


def test_dvc_is_recognised_however_it_is_started():
    assert is_dvc(["/venv/bin/dvc", "repro"])
    assert is_dvc(["/venv/bin/python3", "/venv/bin/dvc", "exp", "run"])
    assert is_dvc(["python", "-m", "dvc", "repro"])
    assert not is_dvc(["python", "-m", "pipeline.cli", "pairs"])
    assert not is_dvc(["/bin/sh", "-c", "dvc repro"])  # a shell running dvc is not dvc
    assert not is_dvc([])


@linux_only
@pytest.mark.parametrize("through_shell", [False, True], ids=["dvc-parent", "dvc-shell-stage"])
def test_a_stage_stops_within_seconds_when_its_dvc_process_is_killed(tmp_path, through_shell):
    """A fake ``dvc`` (an executable of that name) starts a stage-like child that locks its out dir and
    writes on; ``kill -9`` of the fake dvc must stop the child within a few seconds (directly: the
    prctl death signal; through ``$SHELL -c``, which survives dvc: the ancestor poll), and free the lock."""
    out, ticks, pid_file = tmp_path / "out", tmp_path / "ticks.txt", tmp_path / "child.pid"
    child = tmp_path / "child.py"
    child.write_text(textwrap.dedent(f"""
        import os, time
        from pathlib import Path
        from pipeline.outlock import lock_outputs
        lock_outputs(Path({str(out)!r}))
        Path({str(pid_file)!r}).write_text(str(os.getpid()))
        while True:  # a stage writing on
            with open({str(ticks)!r}, "a") as f:
                f.write("tick\\n")
            time.sleep(0.05)
    """))
    command = [sys.executable, str(child)]
    if through_shell:
        command = ["/bin/sh", "-c", f"{sys.executable} {child}; true"]  # `; true` keeps the shell in between
    fake_dvc = tmp_path / "bin" / "dvc"
    fake_dvc.parent.mkdir()
    fake_dvc.write_text(f"#!{sys.executable}\nimport subprocess, sys, time\nsubprocess.Popen({command!r})\ntime.sleep(120)\n")
    fake_dvc.chmod(0o755)
    dvc = subprocess.Popen([str(fake_dvc), "repro"], env=_env(DVC_STAGE="pairs"), cwd=tmp_path)
    try:
        deadline = time.monotonic() + 60
        while not pid_file.is_file() or not pid_file.read_text():
            assert time.monotonic() < deadline and dvc.poll() is None, "the child never started"
            time.sleep(0.05)
        pid = int(pid_file.read_text())
        stat = outlock._stat(pid)
        assert stat is not None and alive(pid, stat[2])
        with pytest.raises(OutputBusyError, match=f"PID {pid}"):
            acquire(out)
        dvc.send_signal(signal.SIGKILL)
        dvc.wait()
        assert _wait_dead(pid, within_s=5.0), "the stage kept running after dvc was killed"
        written = ticks.read_text().count("tick")
        time.sleep(0.3)
        assert ticks.read_text().count("tick") == written  # it writes no more
        acquire(out)  # and its lock is free
        release(out)
    finally:
        if dvc.poll() is None:
            dvc.kill()
            dvc.wait()
        if pid_file.is_file() and pid_file.read_text() and not _wait_dead(int(pid_file.read_text()), 0.1):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)


@linux_only
def test_no_watch_outside_dvc(tmp_path, monkeypatch):
    """A plain command line (no DVC_STAGE), or DVC_STAGE without a dvc ancestor (a test, a user's
    shell), starts no watch: nothing would ever stop it."""
    monkeypatch.delenv("DVC_STAGE", raising=False)
    outlock.watch_dvc_parent()
    monkeypatch.setenv("DVC_STAGE", "pairs")
    assert outlock.dvc_ancestor() is None  # pytest is not started by dvc
    outlock.watch_dvc_parent()
    assert not outlock._watching
