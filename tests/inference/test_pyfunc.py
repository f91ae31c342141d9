"""The MLflow pyfunc: logged into a stage run as ``model``, loaded back it predicts like
``twilbert.load``, and ``mlflow models serve -m runs:/<id>/model --env-manager local`` answers
``/invocations``. Logging never fails a stage."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from tests.inference.test_predict import build_models

TWEETS = ["@ana qué buen día hace hoy JAJAJA", "odio los lunes https://t.co/xyz"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return build_models(tmp_path_factory.getbasetemp() / "inference-models")["single"]


def log_like_the_stage(model_dir: Path, root: Path) -> str:
    """What stages/finetune.py does: a stage run, config.json under `model`, then the pyfunc."""
    from pipeline.pyfunc import log_finetuned_model
    from pipeline.tracking import stage_run

    params = root / "params.yaml"
    params.write_text("x: 1\n")
    with stage_run("finetune:single", params, {"task": "single"}, experiment="test") as t:
        assert t.active
        t.log_artifact(model_dir / "config.json", "model")
        uri = log_finetuned_model(t, model_dir)
    assert uri == f"runs:/{t.run_id}/model"
    return uri


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url: str, payload: dict) -> dict:
    req = urllib.request.Request(url, json.dumps(payload).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


@pytest.mark.slow
def test_logged_model_loads_and_serves(model_dir, tmp_path, monkeypatch):
    import mlflow.pyfunc
    import pandas as pd

    import twilbert

    uri_db = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri_db)
    uri = log_like_the_stage(model_dir, tmp_path)
    expected = twilbert.load(model_dir).predict(TWEETS)

    # in process: the pyfunc predicts exactly what twilbert.load predicts
    mlflow.set_tracking_uri(uri_db)
    loaded = mlflow.pyfunc.load_model(uri)
    got = loaded.predict(pd.DataFrame({"text": TWEETS}))
    assert got.to_dict(orient="records") == expected
    # logged as code, not as a pickled object: nothing in the model is unpickled when it loads
    local = Path(mlflow.artifacts.download_artifacts(uri, dst_path=str(tmp_path / "dl")))
    files = {p.name for p in local.rglob("*") if p.is_file()}
    assert "pyfunc_model.py" in files and not {f for f in files if f.endswith((".pkl", ".pickle"))}, files

    # served: mlflow models serve -m runs:/<id>/model --env-manager local
    mlflow_bin = Path(sys.executable).parent / "mlflow"
    if not mlflow_bin.exists():
        pytest.skip("no mlflow executable next to the interpreter")
    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri_db, "PATH": f"{mlflow_bin.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    log = open(tmp_path / "serve.log", "wb")
    server = subprocess.Popen(
        [str(mlflow_bin), "models", "serve", "-m", uri, "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port)],
        cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None, (tmp_path / "serve.log").read_text(errors="replace")[-3000:]
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2)
                break
            except OSError:
                assert time.monotonic() < deadline, "server did not start in 180 s"
                time.sleep(0.5)
        answer = post(f"http://127.0.0.1:{port}/invocations", {"dataframe_records": [{"text": t} for t in TWEETS]})
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server and its uvicorn worker (our own process group)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()
    rows = answer["predictions"]
    assert [r["label"] for r in rows] == [e["label"] for e in expected]
    for r, e in zip(rows, expected):
        np.testing.assert_allclose([r["probabilities"][k] for k in e["probabilities"]], list(e["probabilities"].values()), atol=1e-6)


def test_logging_never_fails_the_stage(model_dir):
    from pipeline.pyfunc import log_finetuned_model
    from pipeline.tracking import Tracker

    assert log_finetuned_model(Tracker(None, None, None), model_dir) is None  # tracking off: nothing, no warning

    class BrokenClient:
        @property
        def tracking_uri(self):
            raise ConnectionError("store unreachable")

    with pytest.warns(UserWarning, match="could not log the pyfunc model.*store unreachable"):
        assert log_finetuned_model(Tracker("run-id", BrokenClient(), None), model_dir) is None
