"""MLflow glue: safe first initialisation, absolute store through DVC temp copies, fail-safe logging."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pipeline.tracking import Tracker, repo_root, stage_run, tracking_uri

REPO = Path(__file__).resolve().parents[2]


def test_repo_root_seen_through_dvc_temp_copies(tmp_path):
    inner = tmp_path / "proj" / ".dvc" / "tmp" / "exps" / "tmpabc123"
    inner.mkdir(parents=True)
    assert repo_root(inner) == (tmp_path / "proj").resolve()
    assert repo_root(tmp_path) == tmp_path.resolve()


def test_default_uri_is_absolute_sqlite_in_repo_root(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    inner = tmp_path / ".dvc" / "tmp" / "exps" / "x"
    inner.mkdir(parents=True)
    assert tracking_uri(inner) == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////elsewhere/m.db")
    assert tracking_uri(inner) == "sqlite:////elsewhere/m.db"


def test_concurrent_first_use_of_a_fresh_store(tmp_path):
    """Four stages starting at once against a fresh sqlite file: all succeed, one experiment, one parent."""
    db = tmp_path / "fresh.db"
    params = tmp_path / "params.yaml"
    params.write_text("x: 1\n")
    script = textwrap.dedent(
        f"""
        import os, sys
        os.environ["MLFLOW_TRACKING_URI"] = "sqlite:///{db}"
        os.environ["DVC_EXP_NAME"] = "exp-concurrent"
        from pathlib import Path
        from pipeline.tracking import stage_run
        with stage_run("stage" + sys.argv[1], Path("{params}"), {{"k": 1}}, experiment="conc") as t:
            assert t.active, "tracking fell back"
            t.log_metrics({{"m": 1.0}}, step=1)
        """
    )
    procs = [subprocess.Popen([sys.executable, "-c", script, str(i)], cwd=REPO, stderr=subprocess.PIPE, text=True) for i in range(4)]
    errs = [p.communicate(timeout=180)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), errs
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    exp = client.get_experiment_by_name("conc")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and parents[0].info.run_name == "exp-concurrent"
    assert len(children) == 4 and {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
    assert all(c.data.metrics["m"] == 1.0 for c in children)


def test_unreachable_store_never_raises_and_keeps_metrics_locally(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////proc/no/such/dir/mlflow.db")
    fallback = tmp_path / "fallback.jsonl"
    params = tmp_path / "params.yaml"
    params.write_text("x: 1\n")
    with pytest.warns(UserWarning, match="MLflow tracking failed"):
        with stage_run("s", params, {"a": 1}, fallback=fallback) as t:
            assert not t.active
            t.log_metrics({"loss": 2.5}, step=3)
            t.flush()
    records = [json.loads(line) for line in fallback.read_text().splitlines()]
    assert {"step": 3, "metrics": {"loss": 2.5}}.items() <= {k: v for k, v in records[-1].items() if k != "timestamp"}.items()


def test_store_failing_mid_run_falls_back(tmp_path):
    class Broken:
        def log_batch(self, *a, **k):
            raise RuntimeError("database is locked")

        def set_terminated(self, *a, **k):
            raise RuntimeError("database is locked")

    fb = tmp_path / "fb.jsonl"
    t = Tracker("run", Broken(), fb, flush_every_s=0)
    with pytest.warns(UserWarning, match="database is locked"):
        t.log_metrics({"a": 1.0}, step=1)
    t.log_metrics({"a": 2.0}, step=2)
    t.end()
    steps = [json.loads(x)["step"] for x in fb.read_text().splitlines()]
    assert steps == [1, 2]
