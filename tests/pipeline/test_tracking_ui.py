"""What the MLflow UI opens on: the experiment is a model-training one (``mlflow.experimentKind``), and
stage runs are named after their variant (``pretrain · n_encoders=6``: the params ``dvc exp run -S`` set)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from pipeline.tracking import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, VARIANT_TAG, stage_run, variant_name

_ENV = ("DVC_ROOT", "DVC_EXP_NAME", "DVC_EXP_BASELINE_REV", "DVC_STAGE", "TWILBERT_GRID", "RANK", "TWILBERT_TRACKING")
PARAMS = """\
model:
  n_encoders: 2
  hidden: 64
training:
  lr: 0.001
finetuning:
  lr: 5.0e-05
tracking:
  group: ""
"""


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for name in _ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def store(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return MlflowClient(tracking_uri=uri)


@pytest.fixture
def repo(tmp_path) -> Path:
    """A git repo with params.yaml committed (the baseline a DVC experiment edits)."""
    if shutil.which("git") is None:
        pytest.skip("no git")
    root = tmp_path / "repo"
    root.mkdir()
    (root / "params.yaml").write_text(PARAMS)

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, text=True).stdout.strip()

    git("init", "-q")
    git("add", "params.yaml")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "baseline")
    return root


def _edit(repo: Path, old: str, new: str) -> Path:
    p = repo / "params.yaml"
    p.write_text(p.read_text().replace(old, new))
    return p


def test_variant_is_what_differs_from_the_baseline_commit(repo, monkeypatch):
    params = repo / "params.yaml"
    assert variant_name(params) == ""  # a plain `dvc repro` of the committed params
    monkeypatch.setenv("DVC_EXP_NAME", "sappy-turf")
    assert variant_name(params) == "sappy-turf"  # an experiment that changed nothing
    _edit(repo, "n_encoders: 2", "n_encoders: 6")
    assert variant_name(params) == "n_encoders=6"
    _edit(repo, 'group: ""', "group: lr-grid")  # bookkeeping, not a variant
    assert variant_name(params) == "n_encoders=6"
    _edit(repo, "lr: 5.0e-05", "lr: 0.0001")  # `lr` alone is ambiguous: the shortest unique suffix
    assert variant_name(params) == "n_encoders=6, finetuning.lr=0.0001"
    assert variant_name(params, max_len=12) == "n_encoders=…"
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    monkeypatch.setenv("DVC_EXP_BASELINE_REV", head)  # what DVC sets; the diff is against that commit
    assert variant_name(params) == "n_encoders=6, finetuning.lr=0.0001"


def test_variant_without_git_is_the_experiment_name(tmp_path, monkeypatch):
    params = tmp_path / "params.yaml"
    params.write_text(PARAMS)
    assert variant_name(params) == ""
    monkeypatch.setenv("DVC_EXP_NAME", "exp-a")
    assert variant_name(params) == "exp-a"


def test_stage_runs_carry_the_variant_and_the_experiment_is_a_training_one(repo, store, monkeypatch):
    params = repo / "params.yaml"
    with stage_run("pretrain", params, {"model.n_encoders": 2}, experiment="ui") as base:
        pass
    monkeypatch.setenv("DVC_EXP_NAME", "enc6")
    _edit(repo, "n_encoders: 2", "n_encoders: 6")
    with stage_run("pretrain", params, {"model.n_encoders": 6}, experiment="ui") as exp:
        pass

    exp_info = store.get_experiment_by_name("ui")
    assert exp_info.tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND == "custom_model_development"
    assert store.get_run(base.run_id).info.run_name == "pretrain"
    run = store.get_run(exp.run_id)
    assert run.info.run_name == "pretrain · n_encoders=6"
    assert run.data.tags[VARIANT_TAG] == "n_encoders=6"
    parent = store.get_run(run.data.tags["mlflow.parentRunId"])
    assert parent.info.run_name == "enc6"  # the pipeline parent keeps the DVC experiment's name


def test_existing_experiment_gets_the_kind_unless_chosen(tmp_path, store):
    params = tmp_path / "params.yaml"
    params.write_text(PARAMS)
    old = store.create_experiment("old")  # made before the tag existed
    guessed = store.create_experiment("guessed", tags={EXPERIMENT_KIND_TAG: "genai_development_inferred"})
    chosen = store.create_experiment("chosen", tags={EXPERIMENT_KIND_TAG: "genai_development"})
    for name in ("old", "guessed", "chosen"):
        with stage_run("vocab", params, {}, experiment=name):
            pass
    kinds = {e: store.get_experiment(i).tags.get(EXPERIMENT_KIND_TAG) for e, i in (("old", old), ("guessed", guessed), ("chosen", chosen))}
    assert kinds == {"old": EXPERIMENT_KIND, "guessed": EXPERIMENT_KIND, "chosen": "genai_development"}


def test_evaluate_and_report_results_are_on_the_pipeline_parent(tmp_path, store):
    params = tmp_path / "params.yaml"
    params.write_text(PARAMS)
    with stage_run("pretrain", params, {}, experiment="sum") as t:
        t.log_metrics({"loss": 6.5}, step=3)
    with stage_run("report", params, {}, experiment="sum") as t:
        t.log_metrics({"sentiment.test.f1_macro": 0.61, "sentiment.baseline.f1_macro": 0.7})
    with pytest.raises(RuntimeError):
        with stage_run("evaluate", params, {}, experiment="sum") as failed:
            failed.log_metrics({"mlm_accuracy": 0.2})
            raise RuntimeError("stopped")
    parent = store.get_run(store.get_run(t.run_id).data.tags["mlflow.parentRunId"])
    assert parent.data.metrics == {"sentiment.test.f1_macro": 0.61, "sentiment.baseline.f1_macro": 0.7}  # not pretrain's, not a failed stage's


def test_ui_url_opens_the_experiment_on_its_runs(tmp_path, monkeypatch):
    from pipeline.tracking import ui_url

    (tmp_path / ".git").mkdir()
    (tmp_path / "params.yaml").write_text("tracking:\n  experiment: mine\n")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert ui_url(tmp_path) == "http://127.0.0.1:5000/#/experiments?workflowType=machine_learning"  # no store yet
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    client.create_experiment("other")
    exp_id = client.create_experiment("mine")
    assert ui_url(tmp_path) == f"http://127.0.0.1:5000/#/experiments/{exp_id}?workflowType=machine_learning"
