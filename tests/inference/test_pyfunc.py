"""The MLflow pyfunc: logged into a stage run as ``model``, loaded back it predicts like
``twilbert.load``, and the README's serving commands (``make serve RUN=<id>``, then its ``curl``), run
as written from a copy of the repo with uvicorn not on PATH, answer ``/invocations``. Logging never
fails a stage."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from tests.inference.test_predict import build_models

TWEETS = ["@ana qué buen día hace hoy JAJAJA", "odio los lunes https://t.co/xyz"]
REPO = Path(__file__).resolve().parents[2]


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


def post(url: str, payload: dict) -> dict:
    req = urllib.request.Request(url, json.dumps(payload).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def readme_serving_commands() -> tuple[str, str]:
    """(serve, curl): the README's serving block, comments and line continuations as a shell reads them."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    block = next(b for b in re.findall(r"```bash\n(.*?)```", readme, re.S) if "make serve" in b)
    lines = [re.sub(r"\s+#.*$", "", line) for line in block.replace("\\\n", " ").splitlines()]
    serve = next(line for line in lines if line.startswith("make serve"))
    curl = next(line for line in lines if line.startswith("curl "))
    return serve.strip(), curl.strip()


def repo_copy(dst: Path) -> Path:
    """What a fresh clone has that serving needs (Makefile, README), with this interpreter's venv as .venv."""
    dst.mkdir()
    for name in ("Makefile", "README.md"):
        shutil.copy2(REPO / name, dst / name)
    (dst / ".venv").symlink_to(Path(sys.prefix))
    return dst


@pytest.mark.slow
def test_logged_model_loads_and_serves(model_dir, tmp_path, monkeypatch):
    import mlflow.pyfunc
    import pandas as pd

    import twilbert
    from pipeline.pyfunc import serve_command

    for tool in ("make", "curl", "bash"):
        if shutil.which(tool) is None:
            pytest.skip(f"no {tool} on PATH")
    if not (Path(sys.prefix) / "bin" / "mlflow").exists():
        pytest.skip("no mlflow executable in this interpreter's environment")
    repo = repo_copy(tmp_path / "repo")
    uri_db = f"sqlite:///{repo / 'mlflow.db'}"  # the store `make repro` fills, where `make serve` looks
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri_db)
    uri = log_like_the_stage(model_dir, repo)
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

    # served as the README says, in a shell whose PATH has make and curl but not the venv (no uvicorn)
    run_id = uri.split("/")[1]
    serve, curl = readme_serving_commands()
    assert serve.startswith(serve_command(uri).replace(run_id, "<run_id>"))  # the finetune stage's hint is this command
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI" and not k.startswith("VIRTUAL_ENV")}
    env["PATH"] = os.pathsep.join(str(Path(shutil.which(t)).parent) for t in ("make", "curl", "bash"))
    log_path = tmp_path / "serve.log"
    log = open(log_path, "wb")
    server = subprocess.Popen(["bash", "-c", serve.replace("<run_id>", run_id)], cwd=repo, env=env, stdout=log,
                              stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        port = None
        while True:
            text = log_path.read_text(errors="replace")
            assert server.poll() is None, text[-3000:]
            found = re.search(r"http://127\.0\.0\.1:(\d+)/invocations", text)
            if found:
                port = int(found.group(1))
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2)
                    break
                except OSError:
                    pass
            assert time.monotonic() < deadline, "server did not start in 180 s:\n" + text[-3000:]
            time.sleep(0.5)
        assert port != 5000  # `make mlflow-ui` has it
        out = subprocess.run(["bash", "-c", curl.replace("127.0.0.1:5001", f"127.0.0.1:{port}")], cwd=repo, env=env,
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        readme_texts = [r["text"] for r in json.loads(re.search(r"-d '(.*)'", curl).group(1))["dataframe_records"]]
        answer = json.loads(out.stdout)
        answer_tweets = post(f"http://127.0.0.1:{port}/invocations", {"dataframe_records": [{"text": t} for t in TWEETS]})
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # make, the server and its uvicorn worker (our own process group)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()
    assert [r["label"] for r in answer["predictions"]] == [e["label"] for e in twilbert.load(model_dir).predict(readme_texts)]
    rows = answer_tweets["predictions"]
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
