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


def test_results_columns_put_each_task_next_to_its_baseline():
    from pipeline.tracking import results_columns

    report = ["stance.test.f1_macro", "stance.baseline.f1_macro", "sentiment.test.f1_macro", "sentiment.baseline.f1_macro",
              "sentiment.test.accuracy", "timing.sentiment.train_seconds"]
    evaluate = ["mlm_loss", "pseudo_perplexity", "mlm_accuracy"]
    assert results_columns(report + evaluate) == [
        "sentiment.test.f1_macro", "sentiment.baseline.f1_macro", "stance.test.f1_macro", "stance.baseline.f1_macro",
        "mlm_accuracy", "pseudo_perplexity", "test.f1_macro",
    ]
    assert results_columns(evaluate) == ["mlm_accuracy", "pseudo_perplexity", "test.f1_macro"]


def _view(client, exp_name):
    import json

    from pipeline.tracking import VIEW_ID, VIEW_TAG_PREFIX

    raw = client.get_experiment_by_name(exp_name).tags.get(VIEW_TAG_PREFIX + VIEW_ID)
    if raw is None:
        return None
    envelope = json.loads(raw)  # the UI's saved-view envelope: name, createdAt (ms), updatedAt, state as JSON text
    assert isinstance(envelope["name"], str) and isinstance(envelope["createdAt"], int)
    return envelope, json.loads(envelope["state"])


def test_summary_stages_save_the_results_view_and_ui_url_opens_it(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    from pipeline.tracking import VIEW_NAME, ui_url

    (tmp_path / ".git").mkdir()
    (tmp_path / "params.yaml").write_text(PARAMS + "  experiment: res\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    params = tmp_path / "params.yaml"
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    with stage_run("pretrain", params, {}, experiment="res") as t:
        t.log_metrics({"loss": 6.5}, step=1)
    assert _view(client, "res") is None  # no results yet: no view, the plain runs URL
    exp_id = client.get_experiment_by_name("res").experiment_id
    assert ui_url(tmp_path) == f"http://127.0.0.1:5000/#/experiments/{exp_id}?workflowType=machine_learning"

    with stage_run("evaluate", params, {}, experiment="res") as t:
        t.log_metrics({"mlm_accuracy": 0.2, "pseudo_perplexity": 900.0, "mlm_loss": 7.0})
    _, state = _view(client, "res")
    assert state["selectedColumns"] == ["metrics.`mlm_accuracy`", "metrics.`pseudo_perplexity`", "metrics.`test.f1_macro`"]
    with stage_run("report", params, {}, experiment="res") as t:
        t.log_metrics({"sentiment.test.f1_macro": 0.6, "sentiment.baseline.f1_macro": 0.7, "sentiment.test.accuracy": 0.65})
    envelope, state = _view(client, "res")
    expected = ["metrics.`sentiment.test.f1_macro`", "metrics.`sentiment.baseline.f1_macro`", "metrics.`mlm_accuracy`",
                "metrics.`pseudo_perplexity`", "metrics.`test.f1_macro`"]
    assert envelope["name"] == VIEW_NAME
    assert state["selectedColumns"] == state["columnOrder"] == expected
    assert ui_url(tmp_path) == (
        f"http://127.0.0.1:5000/#/experiments/{exp_id}/runs?workflowType=machine_learning&viewStateShareKey=twilbert-results"
    )


def test_results_view_keeps_what_a_user_saved(tmp_path, store):
    import json

    from pipeline.tracking import VIEW_ID, VIEW_TAG_PREFIX

    params = tmp_path / "params.yaml"
    params.write_text(PARAMS)
    tag = VIEW_TAG_PREFIX + VIEW_ID
    mine = store.create_experiment("mine")
    state = {"selectedColumns": ["metrics.`mlm_accuracy`", "attributes.`User`"], "orderByKey": "metrics.`mlm_accuracy`"}
    store.set_experiment_tag(mine, tag, json.dumps({"name": "mine", "createdAt": 1, "state": json.dumps(state)}))
    taken = store.create_experiment("taken")
    compressed = json.dumps({"name": "taken", "createdAt": 1, "state": "deflate;eJwrSS0uAQAEXQHB"})  # rewritten by the UI
    store.set_experiment_tag(taken, tag, compressed)
    for name in ("mine", "taken"):
        with stage_run("evaluate", params, {}, experiment=name) as t:
            t.log_metrics({"mlm_accuracy": 0.2, "pseudo_perplexity": 900.0})
    envelope, state = _view(store, "mine")
    assert envelope["name"] == "mine" and envelope["createdAt"] == 1
    assert state["orderByKey"] == "metrics.`mlm_accuracy`"
    assert state["selectedColumns"] == [
        "metrics.`mlm_accuracy`", "metrics.`pseudo_perplexity`", "metrics.`test.f1_macro`", "attributes.`User`",
    ]
    assert store.get_experiment(taken).tags[tag] == compressed
