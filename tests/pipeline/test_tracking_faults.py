"""Tracking faults: a locked or unreachable MLflow store never kills or stalls a stage for long.

Each fault is injected for real (an exclusive sqlite lock held by another connection, a closed port, a
server that accepts and never answers, a client call that hangs) around the stage-level entry point
``pipeline.common.tracked``. Each test bounds the time the stage spends in tracking, checks that one
warning is emitted and that nothing is lost: the metrics are in the fallback JSONL, and replayed into
MLflow when the store is back at the end of the stage.
"""

from __future__ import annotations

import json
import shutil
import socket
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pytest

from pipeline.common import tracked
from pipeline.params import Params, TrackingParams
from pipeline.tracking import STAGE_TAG, Tracker, call_deadline, probe_timeout

_ENV = ("DVC_ROOT", "DVC_EXP_NAME", "DVC_EXP_BASELINE_REV", "DVC_STAGE", "TWILBERT_GRID", "RANK", "TWILBERT_TRACKING",
        "TWILBERT_TRACKING_TIMEOUT", "TWILBERT_TRACKING_DEADLINE", "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
        "MLFLOW_HTTP_REQUEST_TIMEOUT")
EXPERIMENT = "faults"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for name in _ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def template_db(tmp_path_factory) -> Path:
    from mlflow.tracking import MlflowClient

    db = tmp_path_factory.mktemp("template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{db}").search_experiments()
    return db


@pytest.fixture
def store(tmp_path, template_db, monkeypatch):
    """(db path, client) of a private initialised sqlite store, set as MLFLOW_TRACKING_URI."""
    from mlflow.tracking import MlflowClient

    db = tmp_path / "store" / "mlflow.db"
    db.parent.mkdir()
    shutil.copy(template_db, db)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    return db, MlflowClient(tracking_uri=f"sqlite:///{db}")


class ExclusiveLock:
    """``BEGIN EXCLUSIVE`` on ``db`` from another connection, held by another thread until released."""

    def __init__(self, db: Path):
        self._db, self._held, self._release = db, threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._hold, daemon=True)

    def _hold(self) -> None:
        con = sqlite3.connect(str(self._db), isolation_level=None)
        con.execute("BEGIN EXCLUSIVE")
        self._held.set()
        self._release.wait(120)
        con.execute("ROLLBACK")
        con.close()

    def __enter__(self) -> "ExclusiveLock":
        self._thread.start()
        assert self._held.wait(10)
        return self

    def release(self) -> None:
        self._release.set()
        self._thread.join(10)

    def __exit__(self, *exc) -> None:
        self.release()


def _params() -> Params:
    return replace(Params(), tracking=TrackingParams(experiment=EXPERIMENT))


def _params_file(tmp_path: Path) -> Path:
    p = tmp_path / "params.yaml"
    p.write_text("x: 1\n")
    return p


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _metric_steps(path: Path) -> dict[int, dict]:
    return {r["step"]: r["metrics"] for r in _records(path) if "metrics" in r}


def _tracking_warnings(record) -> list[str]:
    return [str(w.message) for w in record if "MLflow tracking failed" in str(w.message)]


@contextmanager
def _timed(out: list):
    t0 = time.monotonic()
    yield
    out.append(time.monotonic() - t0)


def _stage_body(t, steps=(1, 2, 3)) -> None:
    for step in steps:
        t.log_metrics({"loss": 1.0 / step}, step=step)


# --- a locked sqlite store -------------------------------------------------------------------------
def test_locked_sqlite_store_costs_about_the_probe_timeout(tmp_path, store, monkeypatch, capsys):
    db, client = store
    monkeypatch.setenv("TWILBERT_TRACKING_TIMEOUT", "1")
    fb = tmp_path / "logs" / "pretrain.jsonl"
    took: list[float] = []
    with ExclusiveLock(db), pytest.warns(UserWarning) as rec, _timed(took):
        with tracked("pretrain", _params_file(tmp_path), _params(), ("training",), fallback=fb) as t:
            assert not t.active
            _stage_body(t)
    assert took[0] < 10, took  # two 1 s probes (start and end) plus overhead; MLflow alone waits 20 s per query
    msgs = _tracking_warnings(rec)
    assert len(msgs) == 1 and "locked" in msgs[0] and str(fb) in msgs[0]
    assert _metric_steps(fb) == {1: {"loss": 1.0}, 2: {"loss": 0.5}, 3: {"loss": 1.0 / 3}}
    assert "training.max_steps" in _records(fb)[0]["params"]
    assert "still unavailable" in capsys.readouterr().err
    assert client.get_experiment_by_name(EXPERIMENT) is None  # nothing half-written


def test_store_back_at_the_end_of_the_stage_gets_everything_replayed(tmp_path, store, monkeypatch, capsys):
    db, client = store
    monkeypatch.setenv("TWILBERT_TRACKING_TIMEOUT", "1")
    fb = tmp_path / "logs" / "pretrain.jsonl"
    art = tmp_path / "summary.json"
    art.write_text("{}\n")
    with pytest.warns(UserWarning) as rec:
        with ExclusiveLock(db) as lock:
            with tracked("pretrain", _params_file(tmp_path), _params(), ("training",), fallback=fb) as t:
                assert not t.active
                _stage_body(t, (1, 2))
                lock.release()  # the store comes back while the stage still runs
                _stage_body(t, (3,))
                t.set_tags({"note": "replayed"})
                t.log_artifact(art)
    assert len(_tracking_warnings(rec)) == 1
    assert "store is back" in capsys.readouterr().err
    runs = client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id])
    child = next(r for r in runs if r.data.tags.get(STAGE_TAG) == "pretrain")
    parent = client.get_run(child.data.tags["mlflow.parentRunId"])
    hist = client.get_metric_history(child.info.run_id, "loss")
    assert sorted((m.step, m.value) for m in hist) == [(1, 1.0), (2, 0.5), (3, 1.0 / 3)]
    assert "training.max_steps" in child.data.params and "model.hidden_size" in parent.data.params
    assert child.data.tags["note"] == "replayed"
    assert [a.path for a in client.list_artifacts(child.info.run_id)] == ["summary.json"]
    assert child.info.status == "FINISHED" and parent.info.status == "FINISHED"
    assert child.info.start_time <= min(m.timestamp for m in hist)  # the run starts when the stage did
    assert _records(fb)[-1]["replayed_to"] == child.info.run_id


def test_store_locked_mid_run_costs_one_deadline_and_is_replayed(tmp_path, store, monkeypatch):
    """The store locks after a good start: one flush waits the tracker's deadline, not MLflow's 20 s
    busy wait; the rest goes to the fallback and into the same run at the end.

    Initialisation runs under the default deadline and only the tracker's per-call deadline is cut to
    1 s once the run is open: a 1 s deadline for the whole stage made the start itself time out on a
    slow CI machine (creating the experiment and the parent run there took more than a second)."""
    db, client = store
    monkeypatch.setenv("TWILBERT_TRACKING_TIMEOUT", "1")
    fb = tmp_path / "fb.jsonl"
    took: list[float] = []
    with pytest.warns(UserWarning) as rec:
        with tracked("finetune:stance", _params_file(tmp_path), _params(), ("finetuning",), fallback=fb) as t:
            assert t.active
            t.deadline_s = 1.0
            _stage_body(t, (1,))
            t.flush()
            with ExclusiveLock(db), _timed(took):
                _stage_body(t, (2,))
                t.flush()
            assert not t.active
            _stage_body(t, (3,))
    assert took[0] < 4, took
    assert len(_tracking_warnings(rec)) == 1
    assert set(_metric_steps(fb)) == {2, 3}
    hist = client.get_metric_history(t.run_id, "loss")
    assert sorted({m.step for m in hist}) == [1, 2, 3]
    assert client.get_run(t.run_id).info.status == "FINISHED"


def test_fallback_of_a_temp_experiment_copy_lands_in_the_original_repo(tmp_path, template_db, monkeypatch):
    """Under dvc exp run --temp/--queue the copy is deleted afterwards: a relative fallback path goes to
    <repo>/<dir>/<experiment>/<file>."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    monkeypatch.setenv("TWILBERT_TRACKING_TIMEOUT", "1")
    proj = tmp_path / "proj"
    (proj / ".dvc").mkdir(parents=True)
    shutil.copy(template_db, proj / "mlflow.db")
    copy = proj / ".dvc" / "tmp" / "exps" / "run" / "tmpz9"
    (copy / ".dvc").mkdir(parents=True)
    monkeypatch.chdir(copy)
    monkeypatch.setenv("DVC_EXP_NAME", "exp-x")
    with ExclusiveLock(proj / "mlflow.db"), pytest.warns(UserWarning, match="MLflow tracking failed"):
        with tracked("pretrain", _params_file(copy), _params(), ("training",), fallback=Path("logs/tracking/pretrain.jsonl")) as t:
            _stage_body(t)
    assert set(_metric_steps(proj / "logs" / "tracking" / "exp-x" / "pretrain.jsonl")) == {1, 2, 3}
    assert not (copy / "logs").exists()


# --- an unreachable http store ---------------------------------------------------------------------
def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_dead_http_port_with_default_settings_is_bounded(tmp_path, monkeypatch):
    """MLflow alone retries for > 85 s here; with the defaults the stage loses well under 15 s."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{_closed_port()}")
    fb = tmp_path / "fb.jsonl"
    took: list[float] = []
    with pytest.warns(UserWarning) as rec, _timed(took):
        with tracked("pretrain", _params_file(tmp_path), _params(), ("training",), fallback=fb) as t:
            assert not t.active
            _stage_body(t)
    assert took[0] < 15, took
    msgs = _tracking_warnings(rec)
    assert len(msgs) == 1 and "unreachable" in msgs[0]
    assert set(_metric_steps(fb)) == {1, 2, 3}


def test_http_store_that_never_answers_costs_the_probe_timeout(tmp_path, monkeypatch):
    """A server that accepts connections and never replies (a hung proxy)."""
    monkeypatch.setenv("TWILBERT_TRACKING_TIMEOUT", "1")
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(16)  # never accept()
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{srv.getsockname()[1]}")
        fb = tmp_path / "fb.jsonl"
        took: list[float] = []
        with pytest.warns(UserWarning) as rec, _timed(took):
            with tracked("pretrain", _params_file(tmp_path), _params(), ("training",), fallback=fb) as t:
                _stage_body(t)
    assert took[0] < 8, took
    assert len(_tracking_warnings(rec)) == 1
    assert set(_metric_steps(fb)) == {1, 2, 3}


# --- a hung call and the bounds --------------------------------------------------------------------
def test_a_hung_mlflow_call_is_abandoned_after_the_deadline(tmp_path):
    gate = threading.Event()

    class Hung:
        def log_batch(self, *a, **k):
            gate.wait(60)

    fb = tmp_path / "fb.jsonl"
    t = Tracker("run", Hung(), fb, flush_every_s=0, deadline_s=0.5)
    took: list[float] = []
    with pytest.warns(UserWarning, match="no answer within 0.5 s"), _timed(took):
        t.log_metrics({"a": 1.0}, step=1)
        t.log_metrics({"a": 2.0}, step=2)
        t.end()
    gate.set()
    assert took[0] < 3, took
    assert _metric_steps(fb) == {1: {"a": 1.0}, 2: {"a": 2.0}}


def test_bounds_default_and_configurable(monkeypatch):
    assert probe_timeout() == 5.0 and call_deadline() == 60.0
    monkeypatch.setenv("TWILBERT_TRACKING_TIMEOUT", "0.5")
    monkeypatch.setenv("TWILBERT_TRACKING_DEADLINE", "7")
    assert probe_timeout() == 0.5 and call_deadline() == 7.0
    monkeypatch.setenv("TWILBERT_TRACKING_TIMEOUT", "soon")
    assert probe_timeout() == 5.0
