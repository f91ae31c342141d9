"""`dvc repro` and `dvc exp run` of the pipeline in a temporary git copy of the repository."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.slow


def _run(cmd: list[str], cwd: Path, env: dict, timeout: int = 900) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A git copy of the repo's tracked (and untracked, not ignored) files, with one commit."""
    dst = tmp_path_factory.mktemp("proj")
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    for f in files:
        src = REPO / f
        if src.is_file():
            (dst / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / f)
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "MLFLOW_TRACKING_URI": f"sqlite:///{dst / 'mlflow.db'}",
        "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t",
    }
    env.pop("DVC_EXP_NAME", None)
    _run(["git", "init", "-q"], dst, env)
    _run(["git", "add", "-A"], dst, env)
    _run(["git", "commit", "-qm", "copy"], dst, env)
    return dst, env


def test_dvc_repro_runs_the_data_stages(project):
    root, env = project
    _run(["dvc", "repro", "pairs"], root, env)
    stats = json.loads((root / "data/normalized/stats.json").read_text())
    for kind in ("pairs", "tweets"):
        s = stats[kind]
        assert s["rows_in"] == s["rows_out"] + s["rows_rejected"] + s["rows_dropped"] and s["reconciles"]
    assert stats["pairs"]["rows_out"] > 100
    assert (root / "models/vocab/spm.model").is_file()
    manifest = json.loads((root / "data/pairs/manifest.json").read_text())
    assert manifest and any((root / "data/pairs" / s).exists() for s in ("train", "valid", "test"))
    # Nothing to do the second time.
    out = _run(["dvc", "repro", "pairs"], root, env).stdout
    assert "didn't change" in out or "up to date" in out.lower()
    # MLflow: one parent run with nested stage runs, in the absolute store.
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name("twilbert")
    stages = {r.data.tags.get("twilbert.stage") for r in client.search_runs([exp.experiment_id])}
    assert {"normalize", "vocab", "pairs"} <= stages


def test_dvc_exp_run_with_a_param_override(project):
    root, env = project
    _run(["dvc", "exp", "run", "pairs", "-S", "pairs.negatives=both", "-n", "neg-both"], root, env)
    shown = json.loads(_run(["dvc", "exp", "show", "--json"], root, env).stdout)
    text = json.dumps(shown)
    assert "neg-both" in text and '"both"' in text
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name("twilbert")
    runs = client.search_runs([exp.experiment_id], filter_string="tags.`dvc.exp_name` = 'neg-both'")
    assert runs and all(r.data.params.get("pairs.negatives") == "both" for r in runs if r.data.tags.get("twilbert.stage") == "pairs")
