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


def _shorten(params: Path) -> None:
    """Fewer epochs than `make repro` so the e2e test stays quick; everything else as shipped."""
    from ruamel.yaml import YAML

    yaml = YAML()
    data = yaml.load(params.read_text())
    data["training"]["epochs"] = 1
    data["finetuning"]["epochs"] = 1
    data["evaluate"]["pll_sentences"] = 5
    with open(params, "w") as f:
        yaml.dump(data, f)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A git copy of the repo's tracked files (as a fresh clone has them), with one commit. Untracked
    files are left out on purpose: a module that is imported but not committed must fail here, as it
    would in a clone or in a queued DVC experiment (which copies only git-tracked files)."""
    dst = tmp_path_factory.mktemp("proj")
    files = subprocess.run(["git", "ls-files", "--cached"], cwd=REPO, capture_output=True, text=True, check=True).stdout.splitlines()
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
    _shorten(dst / "params.yaml")
    _run(["git", "init", "-q"], dst, env)
    _run(["git", "add", "-A"], dst, env)
    _run(["git", "commit", "-qm", "copy"], dst, env)
    return dst, env


def test_dvc_repro_runs_the_whole_pipeline(project):
    root, env = project
    _run(["dvc", "repro"], root, env)
    stats = json.loads((root / "data/normalized/stats.json").read_text())
    for kind in ("pairs", "tweets"):
        s = stats[kind]
        assert s["rows_in"] == s["rows_out"] + s["rows_rejected"] + s["rows_dropped"] and s["reconciles"]
    assert stats["pairs"]["rows_out"] > 100
    assert (root / "models/vocab/spm.model").is_file()
    manifest = json.loads((root / "data/pairs/manifest.json").read_text())
    assert manifest["rows"]["train"]["total"] > 0
    assert (root / "models/pretrain/final/model.safetensors").is_file()
    assert json.loads((root / "reports/pretrain/metrics.json").read_text())["steps"] > 0
    assert "mlm_accuracy" in json.loads((root / "reports/evaluate/metrics.json").read_text())
    for task in ("sentiment", "stance"):
        assert (root / f"models/finetune/{task}/model.safetensors").is_file()
        assert (root / f"reports/finetune/{task}/predictions.tsv").is_file()
    summary = json.loads((root / "reports/summary.json").read_text())
    assert set(summary["tasks"]) == {"sentiment", "stance"} and "baseline" in summary["tasks"]["stance"]
    # Nothing to do the second time.
    out = _run(["dvc", "repro"], root, env).stdout
    assert "didn't change" in out or "up to date" in out.lower()
    # A change to one task's params invalidates that task (and the report), not the other task.
    params = (root / "params.yaml").read_text()
    changed = params.replace("    stance_f1: [AGAINST, FAVOR]", "    stance_f1: [AGAINST]", 1)
    assert changed != params
    (root / "params.yaml").write_text(changed)
    status = json.loads(_run(["dvc", "status", "--json"], root, env).stdout)
    (root / "params.yaml").write_text(params)
    assert set(status) == {"finetune@stance", "report"}, status
    # MLflow: one parent run with nested stage runs, in the absolute store.
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name("twilbert")
    stages = {r.data.tags.get("twilbert.stage") for r in client.search_runs([exp.experiment_id])}
    assert {"normalize", "vocab", "pairs", "pretrain", "evaluate", "finetune:sentiment", "finetune:stance", "report"} <= stages


def test_models_of_the_pipeline_predict_embed_and_load_from_mlflow(project):
    """What `make repro` leaves is usable: predict and embed on the pipeline's own models, and the
    finetune run's MLflow pyfunc model answers like the model directory."""
    root, env = project
    if not (root / "models/finetune/sentiment/model.safetensors").is_file():
        _run(["dvc", "repro"], root, env)
    tweets = "qué buen día jajaja\nodio los lunes @ana\n"
    proc = subprocess.run(["twilbert", "predict", "-m", "models/finetune/sentiment"], cwd=root, env=env, input=tweets,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    cats = set(json.loads((root / "models/finetune/sentiment/config.json").read_text())["labels"])
    assert len(rows) == 2 and all(r["label"] in cats and abs(sum(r["probabilities"].values()) - 1) < 1e-5 for r in rows)
    proc = subprocess.run(["twilbert", "embed", "-m", "models/pretrain/final", "-o", str(root / "emb.npy")], cwd=root, env=env,
                          input=tweets, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    import numpy as np

    assert np.load(root / "emb.npy").shape[0] == 2
    import mlflow
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name("twilbert")
    runs = client.search_runs([exp.experiment_id], "tags.`twilbert.stage` = 'finetune:sentiment'")
    assert runs
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    served = mlflow.pyfunc.load_model(f"runs:/{runs[0].info.run_id}/model")
    import pandas as pd

    out = served.predict(pd.DataFrame({"text": tweets.splitlines()}))
    assert list(out["label"]) == [r["label"] for r in rows]


def test_dvc_exp_run_records_the_variant_in_dvc_and_mlflow(project):
    root, env = project
    _run(["dvc", "exp", "run", "-S", "model.n_encoders=6", "-n", "enc6"], root, env)
    shown = json.loads(_run(["dvc", "exp", "show", "--json"], root, env).stdout)
    exps = [e for c in shown for e in (c.get("experiments") or []) if e.get("name") == "enc6"]
    assert exps, json.dumps(shown)[:2000]
    assert exps[0]["revs"][0]["data"]["params"]["params.yaml"]["data"]["model"]["n_encoders"] == 6
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name("twilbert")
    runs = client.search_runs([exp.experiment_id], filter_string="tags.`dvc.exp_name` = 'enc6'")
    pretrain = [r for r in runs if r.data.tags.get("twilbert.stage") == "pretrain"]
    assert pretrain and pretrain[0].data.params["model.n_encoders"] == "6"
    parent = client.get_run(pretrain[0].data.tags["mlflow.parentRunId"])
    assert parent.info.run_name == "enc6" and parent.data.params["model.n_encoders"] == "6"
    # Only the stages downstream of `model` ran again.
    assert {r.data.tags.get("twilbert.stage") for r in runs} >= {"pretrain", "evaluate", "finetune:sentiment"}
    assert "normalize" not in {r.data.tags.get("twilbert.stage") for r in runs}


def _wait_for_queue(root: Path, env: dict, timeout: float = 900) -> str:
    import time

    deadline = time.monotonic() + timeout
    while True:
        status = _run(["dvc", "queue", "status"], root, env).stdout
        if not any(word in status for word in ("Queued", "Running")):
            return status
        assert time.monotonic() < deadline, status
        time.sleep(3)


def test_queued_grid_runs_every_point_and_reports_failures(project):
    """A 2-point fine-tuning grid plus one broken point, queued and run by DVC: both good points are
    in `dvc exp show --json` and in MLflow under one grid parent; the broken one fails alone, visibly
    in `dvc queue status` and in MLflow; `twilbert compare` summarises the grid."""
    root, env = project
    if not (root / "models/finetune/sentiment/model.safetensors").is_file():
        _run(["dvc", "repro"], root, env)
    _run(["git", "add", "-A"], root, env)
    _run(["git", "commit", "-qm", "baseline for the grid", "--allow-empty"], root, env)
    _run(["dvc", "exp", "run", "--queue", "-S", "finetuning.lr=0.002,0.003,-1"], root, env)
    _run(["dvc", "queue", "start", "-j", "1"], root, env)
    status = _wait_for_queue(root, env)
    assert status.count("Success") == 2 and status.count("Failed") == 1, status
    shown = json.loads(_run(["dvc", "exp", "show", "--json"], root, env).stdout)
    from pipeline.experiments import parse_exp_show, summarise

    experiments = parse_exp_show(shown)
    by_lr = {e.params.get("finetuning.lr"): e for e in experiments}
    assert set(by_lr) >= {0.002, 0.003, -1}, [(e.name, e.params.get("finetuning.lr")) for e in experiments]
    for lr in (0.002, 0.003):
        assert by_lr[lr].error is None and "dev" in by_lr[lr].metrics["reports/finetune/sentiment/metrics.json"]
    assert by_lr[-1].error is not None
    grid = summarise(experiments, "sentiment")
    assert [r["config"]["finetuning.lr"] for r in grid["configs"]] and {r["config"]["finetuning.lr"] for r in grid["configs"]} == {0.002, 0.003}
    assert grid["best"]["dev_mean"] == max(r["dev_mean"] for r in grid["configs"])  # chosen on dev
    assert [f["config"]["finetuning.lr"] for f in grid["failed"]] == [-1]
    out = _run(["python", "-m", "pipeline.cli", "compare", "--task", "sentiment"], root, env).stdout
    assert "best on dev" in out and "finetuning.lr" in out and "-1" in out

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name("twilbert")
    names = {by_lr[lr].name: lr for lr in (0.002, 0.003, -1)}
    failed_name = next(n for n, lr in names.items() if lr == -1)
    runs = client.search_runs([exp.experiment_id], filter_string="tags.`twilbert.stage` LIKE '%'")
    everything = [r for r in runs if r.data.tags.get("dvc.exp_name") in names]
    # Only the stages that read `finetuning` ran: upstream outputs came from DVC's cache (no checkpoints
    # directory in the queue's temporary copy must make pre-training look changed).
    assert {r.data.tags["twilbert.stage"] for r in everything} <= {"finetune:sentiment", "finetune:stance", "report"}, \
        sorted({r.data.tags["twilbert.stage"] for r in everything})
    mine = [r for r in everything if r.data.tags["twilbert.stage"].startswith("finetune:")]
    grids = {r.data.tags.get("twilbert.grid") for r in mine}
    assert len(grids) == 1 and None not in grids  # one grid for everything queued from this commit
    good = [r for r in mine if r.data.tags["dvc.exp_name"] != failed_name]
    assert {(r.data.tags["dvc.exp_name"], r.data.tags["twilbert.stage"]) for r in good} == {
        (n, f"finetune:{t}") for n in names if n != failed_name for t in ("sentiment", "stance")}
    assert all(r.info.status == "FINISHED" for r in good)
    # The broken point fails at its first stage that reads `finetuning` (DVC stops the experiment there).
    bad = [r for r in mine if r.data.tags["dvc.exp_name"] == failed_name]
    assert len(bad) == 1 and bad[0].info.status == "FAILED", [(r.data.tags["twilbert.stage"], r.info.status) for r in bad]
    assert "finetuning.lr" in bad[0].data.tags["twilbert.error"]
    grid_parent = client.search_runs([exp.experiment_id], filter_string=f"tags.`twilbert.grid` = '{grids.pop()}'")
    assert any(r.data.tags.get("mlflow.parentRunId") for r in grid_parent)
