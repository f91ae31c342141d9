"""Shared fixtures. Tests never touch the repo's own mlflow.db or DVC cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("DO_NOT_TRACK", "1")
    if "MLFLOW_TRACKING_URI" not in os.environ:
        db = tmp_path_factory.getbasetemp() / "mlflow" / "mlflow.db"
        db.parent.mkdir(exist_ok=True)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    monkeypatch.setenv("DVC_SITE_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "dvc-site-cache"))


def shared_data_or_skip() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is absent")
    return SHARED_DATA


# The committed pipeline outputs are the repo's, not the tests': a test that runs a stage without
# its own --out-dir would overwrite or delete them (it happened once). Checked for the whole session.
OUTPUT_DIRS = ("data/normalized", "data/pairs", "models", "reports")


def _output_stamps() -> dict[str, tuple[int, int]] | None:
    import subprocess

    try:
        files = subprocess.run(["git", "ls-files", "-z", *OUTPUT_DIRS], cwd=REPO, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None  # not a git checkout
    stamps = {}
    for name in filter(None, files.decode().split("\0")):
        try:
            st = (REPO / name).stat()
            stamps[name] = (st.st_size, st.st_mtime_ns)
        except FileNotFoundError:
            stamps[name] = (-1, -1)
    return stamps


def pytest_sessionstart(session):
    session.config._twilbert_outputs = _output_stamps()


def pytest_sessionfinish(session, exitstatus):
    before = getattr(session.config, "_twilbert_outputs", None)
    after = _output_stamps() if before is not None else None
    if before is None or after is None:
        return
    changed = sorted(name for name in before.keys() | after.keys() if before.get(name) != after.get(name))
    if changed:
        print(f"\nerror: the tests changed committed pipeline outputs (a stage ran without its own out dir?): {changed[:10]}")
        session.exitstatus = 1
