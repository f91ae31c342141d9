"""The `pretrain` stage command: only rank 0 opens an MLflow run; a step budget ends with a checkpoint."""

from __future__ import annotations

import json
from contextlib import contextmanager

import pytest
from typer.testing import CliRunner

import pipeline.tracking
from pipeline.cli import app
from tests.train.test_pretrain_fixtures import build_inputs, write_params
from twilbert.train.run_store import list_checkpoints, list_runs


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return build_inputs(tmp_path_factory.mktemp("stage"))


@pytest.fixture
def stage_runs(monkeypatch):
    """Record every MLflow stage run the command asks for (what ``tracked`` passes to ``stage_run``)."""
    calls = []

    @contextmanager
    def recording_stage_run(stage, params_path, params_flat, **kw):
        calls.append({"stage": stage, **kw})
        yield pipeline.tracking.Tracker(None, None, None)

    monkeypatch.setattr(pipeline.tracking, "stage_run", recording_stage_run)
    return calls


def pretrain_cli(inputs, tmp_path, params):
    args = ["pretrain", "--params", str(params), "--shards-dir", str(inputs["shards"]), "--vocab-model", str(inputs["tokenizer"]),
            "--out-dir", str(tmp_path / "out"), "--reports-dir", str(tmp_path / "reports")]
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


@pytest.mark.parametrize("rank", [0, 1])
def test_only_rank_zero_tracks(inputs, tmp_path, monkeypatch, stage_runs, rank):
    """Under torchrun every rank runs the command (RANK is set by torchrun). Rank 1 here runs alone
    (no WORLD_SIZE/LOCAL_RANK, so no process group): what matters is what it asks of the tracker."""
    params = write_params(tmp_path / "params.yaml", inputs["vocab_size"], training={"max_steps": 2})
    text = params.read_text().replace("enabled: false", "enabled: true")  # tracking on, as shipped
    params.write_text(text)
    monkeypatch.setenv("RANK", str(rank))
    pretrain_cli(inputs, tmp_path, params)
    assert [c["stage"] for c in stage_runs] == ["pretrain"]
    (call,) = stage_runs
    if rank == 0:
        assert call["enabled"] is True and call["fallback"] is not None
        assert json.loads((tmp_path / "reports" / "metrics.json").read_text())["steps"] == 2
        # final/ records the params' normalisation rules, for embed / twilbert.load of the checkpoint.
        from pipeline.params import load_params
        from twilbert.config import to_dict
        from twilbert.inference import pretrained_rules

        rules = load_params(params, check_files=False).normalize.rules.effective()
        assert json.loads((tmp_path / "out" / "final" / "pretrain.json").read_text())["normalize"] == to_dict(rules)
        assert pretrained_rules(tmp_path / "out" / "final") == rules
    else:
        assert call["enabled"] is False and call["fallback"] is None  # no run, no local fallback file
        assert not (tmp_path / "reports" / "metrics.json").exists()


def test_dvc_exp_run_like_rerun_with_a_short_budget(inputs, tmp_path, monkeypatch, stage_runs):
    """The reported bug: `dvc exp run -S model.n_encoders=6 -S training.max_steps=3` after a run of
    another config left no checkpoints dir (it was moved aside, and 3 steps saved nothing)."""
    monkeypatch.delenv("RANK", raising=False)
    params = write_params(tmp_path / "params.yaml", inputs["vocab_size"], training={"max_steps": 4}, run={"checkpoint_every": 0})
    pretrain_cli(inputs, tmp_path, params)
    params = write_params(tmp_path / "params.yaml", inputs["vocab_size"], training={"max_steps": 3}, run={"checkpoint_every": 0}, model={"n_encoders": 6})
    pretrain_cli(inputs, tmp_path, params)
    runs = list_runs(tmp_path / "out" / "checkpoints")
    assert len(runs) == 2  # the first config's checkpoints are still there
    assert [p.name for p in list_checkpoints(runs[-1])] == ["step-00000003"]
    assert json.loads((runs[-1] / "run.json").read_text())["run_config"]["model"]["n_encoders"] == 6


@pytest.mark.slow
def test_n_gpus_2_relaunches_under_torchrun_as_the_module(inputs, tmp_path):
    """`python -m pipeline.cli pretrain` (dvc.yaml's command) with impl.n_gpus: 2 relaunches itself
    under torchrun (2 CPU processes, gloo) as `-m pipeline.cli`, and the DDP run finishes with one
    world of 2 (the summary says so)."""
    import os
    import subprocess
    import sys

    from tests.conftest import REPO

    params = write_params(tmp_path / "params.yaml", inputs["vocab_size"], training={"max_steps": 2, "accum_iters": 2}, impl={"n_gpus": 2})
    cmd = [sys.executable, "-m", "pipeline.cli", "pretrain", "--params", str(params), "--shards-dir", str(inputs["shards"]),
           "--vocab-model", str(inputs["tokenizer"]), "--out-dir", str(tmp_path / "out"), "--reports-dir", str(tmp_path / "reports")]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE")}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "launching" in proc.stderr and "-m pipeline.cli pretrain" in proc.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 2
