"""MLflow glue: store location, artifact root, safe first initialisation, parent run status, grids, ranks."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import click
import pytest

from pipeline.tracking import (
    FAILED_LIST_TAG,
    FAILED_STAGE_TAG,
    GRID_TAG,
    STAGE_TAG,
    Tracker,
    grid_name,
    repo_root,
    stage_run,
    tracking_uri,
)

REPO = Path(__file__).resolve().parents[2]
_ENV = ("DVC_ROOT", "DVC_EXP_NAME", "DVC_EXP_BASELINE_REV", "DVC_STAGE", "TWILBERT_GRID", "RANK", "TWILBERT_TRACKING",
        "TWILBERT_TRACKING_TIMEOUT", "TWILBERT_TRACKING_DEADLINE")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for name in _ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def template_db(tmp_path_factory) -> Path:
    """An initialised (empty) MLflow sqlite store, created once; tests copy it (table creation is ~4 s)."""
    from mlflow.tracking import MlflowClient

    db = tmp_path_factory.mktemp("template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{db}").search_experiments()
    return db


@pytest.fixture
def store(tmp_path, template_db, monkeypatch):
    """(uri, client) of a private initialised store, set as MLFLOW_TRACKING_URI."""
    from mlflow.tracking import MlflowClient

    db = tmp_path / "store" / "mlflow.db"
    db.parent.mkdir()
    shutil.copy(template_db, db)
    uri = f"sqlite:///{db}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri, MlflowClient(tracking_uri=uri)


def _params_file(tmp_path: Path) -> Path:
    p = tmp_path / "params.yaml"
    p.write_text("x: 1\n")
    return p


def _runs(client, experiment: str):
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], max_results=1000)


# --- store location --------------------------------------------------------------------------------
def test_repo_root_seen_through_dvc_temp_copies(tmp_path):
    inner = tmp_path / "proj" / ".dvc" / "tmp" / "exps" / "tmpabc123"
    (inner / ".dvc").mkdir(parents=True)  # the copy is a DVC project itself
    assert repo_root(inner) == (tmp_path / "proj").resolve()
    assert repo_root(inner / ".dvc") == (tmp_path / "proj").resolve()
    assert repo_root(tmp_path) == tmp_path.resolve()


def test_repo_root_walks_up_from_the_cwd_to_the_dvc_project(tmp_path, monkeypatch):
    proj = tmp_path / "proj"
    (proj / ".dvc").mkdir(parents=True)
    (proj / "cfg" / "deep").mkdir(parents=True)
    monkeypatch.chdir(proj / "cfg" / "deep")
    assert repo_root() == proj.resolve()
    # A DVC project in a git subfolder (dvc init --subdir): the .dvc folder wins over .git above it.
    (tmp_path / ".git").mkdir()
    assert repo_root() == proj.resolve()
    # No .dvc anywhere: the git root.
    other = tmp_path / "plain" / "sub"
    other.mkdir(parents=True)
    assert repo_root(other) == tmp_path.resolve()
    # DVC sets DVC_ROOT for every stage (the original repo for queued/temp experiments).
    monkeypatch.setenv("DVC_ROOT", str(other))
    assert repo_root() == other.resolve()


def test_default_uri_is_absolute_sqlite_in_repo_root(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    inner = tmp_path / ".dvc" / "tmp" / "exps" / "x"
    inner.mkdir(parents=True)
    assert tracking_uri(inner) == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////elsewhere/m.db")
    assert tracking_uri(inner) == "sqlite:////elsewhere/m.db"
    # A relative sqlite URI is the project root's, never the temporary copy's.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///stores/m.db")
    assert tracking_uri(inner) == f"sqlite:///{tmp_path.resolve() / 'stores' / 'm.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5055")
    assert tracking_uri(inner) == "http://127.0.0.1:5055"


def _project(tmp_path: Path, template_db: Path) -> Path:
    proj = tmp_path / "proj"
    (proj / ".dvc").mkdir(parents=True)
    (proj / "cfg").mkdir()
    (proj / "cfg" / "x.yaml").write_text("x: 1\n")
    shutil.copy(template_db, proj / "mlflow.db")  # initialised, to save ~4 s; location is what is tested
    return proj


def test_store_and_artifacts_in_repo_root_whatever_the_params_folder(tmp_path, monkeypatch, template_db):
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    proj = _project(tmp_path, template_db)
    monkeypatch.chdir(proj)
    (proj / "out.txt").write_text("artifact\n")
    with stage_run("s", Path("cfg/x.yaml"), {"a": 1}, experiment="loc") as t:
        assert t.active
        t.log_artifact(Path("out.txt"))
    assert not (proj / "cfg" / "mlflow.db").exists()
    client = MlflowClient(tracking_uri=f"sqlite:///{proj / 'mlflow.db'}")
    exp = client.get_experiment_by_name("loc")
    assert exp.artifact_location.removeprefix("file://") == str(proj.resolve() / "mlartifacts")
    assert list((proj / "mlartifacts").rglob("out.txt"))
    assert not (proj / "mlruns").exists()


def test_temp_experiment_copy_logs_into_the_original_repo(tmp_path, monkeypatch, template_db):
    """As under `dvc exp run --temp/--queue`: cwd is a copy under .dvc/tmp/exps with its own .dvc/; the
    store, the experiment's artifact root and the artifacts are the original repo's."""
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    proj = _project(tmp_path, template_db)
    copy = proj / ".dvc" / "tmp" / "exps" / "run" / "tmpq1w2e3"
    (copy / ".dvc").mkdir(parents=True)
    (copy / "cfg").mkdir()
    (copy / "cfg" / "x.yaml").write_text("x: 1\n")
    (copy / "summary.md").write_text("# s\n")
    monkeypatch.chdir(copy)
    monkeypatch.setenv("DVC_EXP_NAME", "lucky-lark")
    monkeypatch.setenv("DVC_EXP_BASELINE_REV", "0123456789abcdef0123456789abcdef01234567")
    with stage_run("report", Path("cfg/x.yaml"), {"a": 1}, experiment="tmpcopy") as t:
        assert t.active
        t.log_metrics({"m": 1.0}, step=1)
        t.log_artifact(Path("summary.md"))
    assert not (copy / "mlflow.db").exists() and not (copy / "mlruns").exists() and not (copy / "mlartifacts").exists()
    client = MlflowClient(tracking_uri=f"sqlite:///{proj / 'mlflow.db'}")
    exp = client.get_experiment_by_name("tmpcopy")
    assert exp.artifact_location.removeprefix("file://") == str(proj.resolve() / "mlartifacts")
    assert list((proj / "mlartifacts").rglob("summary.md"))
    child = next(r for r in _runs(client, "tmpcopy") if r.data.tags.get(STAGE_TAG) == "report")
    assert child.data.tags["dvc.exp_name"] == "lucky-lark" and child.data.metrics["m"] == 1.0


# --- safe first use --------------------------------------------------------------------------------
def test_concurrent_first_use_of_a_fresh_store(tmp_path):
    """Four stages starting at once against a fresh sqlite file: all succeed, one experiment, one parent."""
    db = tmp_path / "fresh.db"
    params = _params_file(tmp_path)
    script = textwrap.dedent(
        f"""
        import os, sys
        os.environ["MLFLOW_TRACKING_URI"] = "sqlite:///{db}"
        os.environ["DVC_EXP_NAME"] = "exp-concurrent"
        # This test is about safe first use, not the init deadline: leave room on a loaded 2-core machine.
        os.environ["TWILBERT_TRACKING_DEADLINE"] = "240"
        from pathlib import Path
        from pipeline.tracking import stage_run
        with stage_run("stage" + sys.argv[1], Path("{params}"), {{"k": 1}}, experiment="conc") as t:
            assert t.active, "tracking fell back"
            t.log_metrics({{"m": 1.0}}, step=1)
        """
    )
    procs = [subprocess.Popen([sys.executable, "-c", script, str(i)], cwd=REPO, stderr=subprocess.PIPE, text=True) for i in range(4)]
    errs = [p.communicate(timeout=240)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), errs
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    runs = _runs(client, "conc")
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and parents[0].info.run_name == "exp-concurrent"
    assert len(children) == 4 and {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
    assert all(c.data.metrics["m"] == 1.0 for c in children)
    assert all(c.info.status == "FINISHED" for c in children) and parents[0].info.status == "FINISHED"


# --- fail-safe logging -----------------------------------------------------------------------------
def test_unreachable_store_never_raises_and_keeps_metrics_locally(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////proc/no/such/dir/mlflow.db")
    fallback = tmp_path / "fallback.jsonl"
    params = _params_file(tmp_path)
    with pytest.warns(UserWarning, match="MLflow tracking failed"):
        with stage_run("s", params, {"a": 1}, fallback=fallback) as t:
            assert not t.active
            t.log_metrics({"loss": 2.5}, step=3)
            t.flush()
    records = [json.loads(line) for line in fallback.read_text().splitlines()]
    assert len({r.pop("writer") for r in records}) == 1  # every record names its (one) writer
    assert records[0] == {"params": {"a": "1"}}
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


# --- parent run status -----------------------------------------------------------------------------
def _status(client, run_id: str) -> str:
    return client.get_run(run_id).info.status


def test_parent_status_follows_its_stages(tmp_path, store, monkeypatch):
    """Stage start: parent RUNNING. Success: FINISHED unless a stage's latest attempt failed. Failure
    (exception or a non-zero typer/click Exit): child and parent FAILED, the parent naming the stage. A
    successful retry of the failed stage clears it."""
    _, client = store
    params = _params_file(tmp_path)
    monkeypatch.setenv("DVC_EXP_NAME", "status-exp")

    with stage_run("normalize", params, {"a": 1}, experiment="st") as t:
        parent = client.get_run(t.run_id).data.tags["mlflow.parentRunId"]
        assert _status(client, parent) == "RUNNING"
    assert _status(client, t.run_id) == "FINISHED" and _status(client, parent) == "FINISHED"

    with pytest.raises(RuntimeError):
        with stage_run("pretrain", params, {"a": 1}, experiment="st") as t:
            raise RuntimeError("boom")
    failed_child = t.run_id
    assert _status(client, failed_child) == "FAILED" and _status(client, parent) == "FAILED"
    tags = client.get_run(parent).data.tags
    assert tags[FAILED_STAGE_TAG] == "pretrain" and tags[FAILED_LIST_TAG] == "pretrain"

    with pytest.raises(click.exceptions.Exit):  # what pipeline.common.fail raises (exit 2)
        with stage_run("evaluate", params, {"a": 1}, experiment="st") as t:
            raise click.exceptions.Exit(2)
    assert _status(client, t.run_id) == "FAILED"
    assert client.get_run(parent).data.tags[FAILED_LIST_TAG] == "evaluate,pretrain"

    with pytest.raises(click.exceptions.Exit):
        with stage_run("evaluate", params, {"a": 1}, experiment="st") as t:
            raise click.exceptions.Exit(0)  # a clean early exit is a success
    assert _status(client, t.run_id) == "FINISHED" and _status(client, parent) == "FAILED"

    with stage_run("pretrain", params, {"a": 1}, experiment="st") as t:  # the retry succeeds
        assert _status(client, parent) == "FAILED"  # still failed while the retry runs
    assert _status(client, parent) == "FINISHED"
    assert client.get_run(parent).data.tags[FAILED_LIST_TAG] == ""
    assert _status(client, failed_child) == "FAILED"  # the failed attempt stays visible


def test_a_crashed_stage_run_is_marked_killed_when_the_stage_restarts(tmp_path, store, monkeypatch):
    _, client = store
    params = _params_file(tmp_path)
    monkeypatch.setenv("DVC_EXP_NAME", "crash-exp")
    with stage_run("pretrain", params, {"a": 1}, experiment="crash") as t:
        parent = client.get_run(t.run_id).data.tags["mlflow.parentRunId"]
        exp_id = client.get_run(t.run_id).info.experiment_id
    # What kill -9 leaves behind: a child still RUNNING.
    stale = client.create_run(exp_id, run_name="pretrain", tags={"mlflow.parentRunId": parent, STAGE_TAG: "pretrain"})
    with stage_run("pretrain", params, {"a": 1}, experiment="crash"):
        assert _status(client, stale.info.run_id) == "KILLED"
    assert _status(client, parent) == "FINISHED"


# --- grids -----------------------------------------------------------------------------------------
BASE = "0123456789abcdef0123456789abcdef01234567"


def test_grid_name_sources(monkeypatch):
    assert grid_name() is None  # plain dvc repro: no grid
    monkeypatch.setenv("DVC_EXP_BASELINE_REV", BASE)
    assert grid_name() == "exp-0123456"
    assert grid_name("lr-sweep") == "lr-sweep"
    monkeypatch.setenv("TWILBERT_GRID", "it's mine")
    assert grid_name("lr-sweep") == "it_s mine"


def test_two_experiments_of_a_grid_share_one_grid_parent(tmp_path, store, monkeypatch):
    """Two simulated queued experiments off one baseline: one grid parent, each experiment's parent
    nested under it, every run tagged; the grid is FAILED (naming exp/stage) when one experiment fails,
    and RUNNING while an experiment still runs."""
    _, client = store
    params = _params_file(tmp_path)
    monkeypatch.setenv("DVC_EXP_BASELINE_REV", BASE)

    monkeypatch.setenv("DVC_EXP_NAME", "exp-a")
    with stage_run("finetune:sentiment", params, {"lr": 1e-5}, all_params_flat={"lr": 1e-5}, experiment="grid") as ta:
        ta.log_metrics({"dev.macro_f1": 0.5}, step=1)
        monkeypatch.setenv("DVC_EXP_NAME", "exp-b")
        with pytest.raises(RuntimeError):
            with stage_run("finetune:sentiment", params, {"lr": 5e-5}, all_params_flat={"lr": 5e-5}, experiment="grid") as tb:
                raise RuntimeError("diverged")
        grid_id = client.get_run(client.get_run(ta.run_id).data.tags["mlflow.parentRunId"]).data.tags["mlflow.parentRunId"]
        assert _status(client, grid_id) == "FAILED"

    runs = _runs(client, "grid")
    assert all(r.data.tags.get(GRID_TAG) == "exp-0123456" for r in runs)
    grids = [r for r in runs if r.data.tags.get("twilbert.run_kind") == "grid"]
    pipes = [r for r in runs if r.data.tags.get("twilbert.run_kind") == "pipeline"]
    assert len(grids) == 1 and grids[0].info.run_id == grid_id and "mlflow.parentRunId" not in grids[0].data.tags
    assert sorted(p.info.run_name for p in pipes) == ["exp-a", "exp-b"]
    assert {p.data.tags["mlflow.parentRunId"] for p in pipes} == {grid_id}
    assert {p.info.run_name: p.data.params["lr"] for p in pipes} == {"exp-a": "1e-05", "exp-b": "5e-05"}
    assert {p.info.run_name: p.info.status for p in pipes} == {"exp-a": "FINISHED", "exp-b": "FAILED"}
    assert client.get_run(grid_id).data.tags[FAILED_STAGE_TAG] == "exp-b/finetune:sentiment"
    assert _status(client, tb.run_id) == "FAILED"

    # The failed experiment is re-run and succeeds: the grid is FINISHED.
    with stage_run("finetune:sentiment", params, {"lr": 5e-5}, all_params_flat={"lr": 5e-5}, experiment="grid"):
        pass
    assert _status(client, grid_id) == "FINISHED"


def test_grid_running_until_its_last_experiment_ends(tmp_path, store, monkeypatch):
    _, client = store
    params = _params_file(tmp_path)
    monkeypatch.setenv("TWILBERT_GRID", "sweep-1")
    monkeypatch.setenv("DVC_EXP_NAME", "exp-a")
    with stage_run("s", params, {"a": 1}, experiment="g2") as ta:
        monkeypatch.setenv("DVC_EXP_NAME", "exp-b")
        with stage_run("s", params, {"a": 1}, experiment="g2") as tb:
            pass
        grid_id = client.get_run(client.get_run(tb.run_id).data.tags["mlflow.parentRunId"]).data.tags["mlflow.parentRunId"]
        assert _status(client, grid_id) == "RUNNING"  # exp-a is still running
    assert _status(client, grid_id) == "FINISHED"
    assert client.get_run(grid_id).info.run_name == "sweep-1"


def test_tracked_takes_the_grid_from_its_group(tmp_path, store):
    from pipeline.common import tracked
    from pipeline.params import Params, TrackingParams

    _, client = store
    p = replace(Params(), tracking=TrackingParams(experiment="grp"))
    with tracked("vocab", _params_file(tmp_path), p, ("vocab",), group="lr-sweep") as t:
        assert t.active
    run = client.get_run(t.run_id)
    assert run.data.tags[GRID_TAG] == "lr-sweep"
    assert "vocab.vocab_size" in run.data.params and "vocab.vocab_size" in client.get_run(run.data.tags["mlflow.parentRunId"]).data.params


def test_concurrent_experiments_create_one_grid_parent(tmp_path, template_db):
    """`dvc queue start -j 2` of one grid: two experiments start at once on one store."""
    db = tmp_path / "grid.db"
    shutil.copy(template_db, db)
    params = _params_file(tmp_path)
    script = textwrap.dedent(
        f"""
        import os, sys
        for k in ("DVC_ROOT", "TWILBERT_GRID", "RANK"):
            os.environ.pop(k, None)
        os.environ["MLFLOW_TRACKING_URI"] = "sqlite:///{db}"
        os.environ["DVC_EXP_NAME"] = "exp-" + sys.argv[1]
        os.environ["DVC_EXP_BASELINE_REV"] = "{BASE}"
        os.environ["TWILBERT_TRACKING_DEADLINE"] = "240"
        import time
        from pathlib import Path
        from pipeline.tracking import stage_run
        import mlflow.tracking  # imports first, then a barrier: both initialise at the same moment
        Path("{tmp_path}/ready-" + sys.argv[1]).touch()
        t0 = time.monotonic()
        while len(list(Path("{tmp_path}").glob("ready-*"))) < 2 and time.monotonic() - t0 < 120:
            time.sleep(0.01)
        with stage_run("finetune:stance", Path("{params}"), {{"seed": int(sys.argv[1])}}, experiment="cgrid") as t:
            assert t.active, "tracking fell back"
            t.log_metrics({{"m": float(sys.argv[1])}}, step=1)
        """
    )
    procs = [subprocess.Popen([sys.executable, "-c", script, str(i)], cwd=REPO, stderr=subprocess.PIPE, text=True) for i in range(2)]
    errs = [p.communicate(timeout=240)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), errs
    from mlflow.tracking import MlflowClient

    runs = _runs(MlflowClient(tracking_uri=f"sqlite:///{db}"), "cgrid")
    grids = [r for r in runs if r.data.tags.get("twilbert.run_kind") == "grid"]
    pipes = [r for r in runs if r.data.tags.get("twilbert.run_kind") == "pipeline"]
    stages = [r for r in runs if r.data.tags.get("twilbert.run_kind") == "stage"]
    assert len(grids) == 1 and len(pipes) == 2 and len(stages) == 2
    assert {p.data.tags["mlflow.parentRunId"] for p in pipes} == {grids[0].info.run_id}
    assert sorted(s.data.metrics["m"] for s in stages) == [0.0, 1.0]
    assert all(r.info.status == "FINISHED" for r in runs)


# --- torchrun ranks --------------------------------------------------------------------------------
def test_only_rank_zero_tracks(tmp_path, store, monkeypatch, recwarn):
    """torchrun: RANK set and not "0" gives a disabled tracker (no MLflow, no fallback file, no warning)."""
    from pipeline.common import tracked
    from pipeline.params import Params, TrackingParams

    _, client = store
    p = replace(Params(), tracking=TrackingParams(experiment="ranks"))
    fb = tmp_path / "fb.jsonl"
    monkeypatch.setenv("RANK", "1")
    with tracked("pretrain", _params_file(tmp_path), p, ("training",), fallback=fb) as t:
        assert not t.active and t.run_id is None
        t.log_metrics({"loss": 1.0}, step=1)
        t.log_params({"x": 1})
        t.flush()
    assert client.get_experiment_by_name("ranks") is None and not fb.exists()
    assert not [w for w in recwarn if "MLflow" in str(w.message)]
    monkeypatch.setenv("RANK", "0")
    with tracked("pretrain", _params_file(tmp_path), p, ("training",), fallback=fb) as t:
        assert t.active
        t.log_metrics({"loss": 1.0}, step=1)
    assert client.get_run(t.run_id).data.metrics["loss"] == 1.0


def test_tracking_off_writes_no_local_file(tmp_path, monkeypatch):
    """TWILBERT_TRACKING=off: no MLflow and no fallback JSONL either (nothing to replay, nothing kept)."""
    monkeypatch.setenv("TWILBERT_TRACKING", "off")
    fallback = tmp_path / "logs" / "fallback.jsonl"
    with stage_run("s", _params_file(tmp_path), {"a": 1}, fallback=fallback) as t:
        assert not t.active
        t.log_metrics({"loss": 2.5}, step=3)
        t.log_params({"b": 2})
        t.flush()
    assert not fallback.exists() and not fallback.parent.exists()


def test_concurrent_trackers_on_one_fallback_replay_only_their_own_records(tmp_path):
    """Two stages whose store is down share a fallback file: their lines stay whole, and each replay
    sends only that tracker's records."""
    from pipeline.tracking import Tracker

    fallback = tmp_path / "shared.jsonl"
    a, b = Tracker(None, None, fallback), Tracker(None, None, fallback)
    for t in (a, b):
        t._fail("initialisation", RuntimeError("store down"))
    for step in range(5):
        a._local({"step": step, "metrics": {"a": float(step)}})
        b._local({"step": step, "metrics": {"b": float(step)}, "pad": "x" * 20_000})  # larger than a buffer
    lines = fallback.read_text().splitlines()
    assert len(lines) == 10 and all(json.loads(line) for line in lines)  # no torn or interleaved line
    assert [r["metrics"] for r in a._unsent()] == [{"a": float(s)} for s in range(5)]
    assert [r["metrics"] for r in b._unsent()] == [{"b": float(s)} for s in range(5)]
