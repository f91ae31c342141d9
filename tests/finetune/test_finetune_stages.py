"""The finetune and report stage commands on small generated tasks (Typer CliRunner, real outputs):
MLflow per-epoch metrics and artifacts, summary.json's schema and summary.md's numbers, and no wall
time in either DVC metrics file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from pipeline.cli import app
from tests.finetune.test_finetune_e2e import CPU, LABELS, make_task, tiny_model_config, tok_path, write_task  # noqa: F401
from twilbert.finetune.config import FinetuningConfig
from twilbert.finetune.train import finetune_task
from twilbert.report import RUN_DETAIL_KEYS

STANCE = ["AGAINST", "NEUTRAL", "FAVOR"]
FINETUNING = {"epochs": 2, "batch_size": 8, "max_len": 12, "path_load_weights": "random", "lr": 0.01}


def write_project(root: Path, tok: Path, *, tracking: bool, finetuning: dict | None = None) -> Path:
    """A params.yaml for two generated tasks (single text and text pair) and a tiny model."""
    write_task(root / "senti", seed=1)
    write_task(root / "stance", pair=True, seed=2)
    for split in ("train", "dev", "test"):  # stance labels
        p = root / "stance" / f"{split}.tsv"
        text = p.read_text().replace("\tN\n", "\tAGAINST\n").replace("\tNEU\n", "\tNEUTRAL\n").replace("\tP\n", "\tFAVOR\n")
        p.write_text(text)
    (root / "pairs.tsv").write_text("ORIG_ID\tORIG_TEXT\tREPLY_ID\tREPLY_TEXT\n1\ta\t2\tb\n")
    params = {
        "data": {"pairs": ["pairs.tsv"]},
        "representation": {"max_len": 12},
        "model": {"hidden_size": 16, "embedding_size": 16, "n_encoders": 1, "n_heads": 2},
        "finetuning": {**FINETUNING, **(finetuning or {})},
        "tasks": {
            "senti": {"train_file": "senti/train.tsv", "dev_file": "senti/dev.tsv", "test_file": "senti/test.tsv",
                      "categories": {lab: i for i, lab in enumerate(LABELS)}, "class_weights": "auto"},
            "stance": {"train_file": "stance/train.tsv", "dev_file": "stance/dev.tsv", "test_file": "stance/test.tsv",
                       "aux_header": "TARGET", "categories": {lab: i for i, lab in enumerate(STANCE)}, "stance_f1": ["AGAINST", "FAVOR"]},
        },
        "impl": {"device": "cpu", "tokenizer_threads": 1, "num_threads": 1, "progress": False},
        "tracking": {"enabled": tracking, "experiment": "stage-test"},
    }
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def invoke(args: list[str]):
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def keys_anywhere(obj) -> set[str]:
    if isinstance(obj, dict):
        return set(obj) | {k for v in obj.values() for k in keys_anywhere(v)}
    if isinstance(obj, list):
        return {k for v in obj for k in keys_anywhere(v)}
    return set()


# --------------------------------------------------------------------------------------------------
# report stage


def test_report_stage_on_two_tasks(tmp_path, tok_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    params = write_project(tmp_path, tok_path, tracking=False)
    from pipeline.params import load_params

    p = load_params(params)
    for name in ("senti", "stance"):  # real fine-tuning outputs
        task = make_task(tmp_path / name, **{k: getattr(p.tasks[name], k) for k in ("categories", "class_weights", "aux_header", "stance_f1")})
        finetune_task(name, task, FinetuningConfig(**FINETUNING), tokenizer_path=tok_path, rules=p.normalize.rules.effective(),
                      model_out=tmp_path / "models" / name, report_out=tmp_path / "reports" / "finetune" / name,
                      model_config=tiny_model_config(tok_path), impl=CPU, progress=False)
    pre = {"steps": 10, "loss": 6.5, "mlm_accuracy": 0.03, "rop_accuracy": 0.5, "wall_s": 77.1, "tokens_per_s": 1955.3, "device": "cpu"}
    (tmp_path / "pre.json").write_text(json.dumps(pre))
    args = ["report", "--params", str(params), "--finetune-reports", "reports/finetune", "--pretrain-metrics", "pre.json",
            "--evaluate-metrics", "missing.json", "--out-dir", "reports"]
    invoke(args)

    summary = json.loads((tmp_path / "reports" / "summary.json").read_text())
    assert set(summary) == {"tasks", "pretraining"} and list(summary["tasks"]) == ["senti", "stance"]
    assert set(summary["pretraining"]) == {"training", "evaluation"} and summary["pretraining"]["evaluation"] is None
    assert summary["pretraining"]["training"]["steps"] == 10
    for name, sel in (("senti", "f1_macro"), ("stance", "stance_f1")):
        e = summary["tasks"][name]
        assert {"test", "dev", "baseline"} <= set(e) and e["selection_metric"] == sel
        metrics = json.loads((tmp_path / "reports" / "finetune" / name / "metrics.json").read_text())
        assert e["test"] == metrics["test"] and e["dev"] == metrics["dev"]  # the finetune outputs, as written
        assert {"dev", "test", "best_params", "grid"} <= set(e["baseline"]) and sel in e["baseline"]["test"]
    # summary.md: a row per task whose numbers are the JSON's
    md = (tmp_path / "reports" / "summary.md").read_text()
    for name in ("senti", "stance"):
        e = summary["tasks"][name]
        sel = e["selection_metric"]
        row = next(line for line in md.splitlines() if line.startswith(f"| {name} | {sel} |"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        want = [e["dev"][sel], e["test"][sel], e["baseline"]["dev"][sel], e["baseline"]["test"][sel]]
        assert cells[2:6] == [f"{v:.4f}" for v in want]
        assert cells[6] == f"{e['test'][sel] - e['baseline']['test'][sel]:+.4f}"
        acc = next(line for line in md.splitlines() if line.startswith(f"| {name} | ") and line.count("|") == 8 and sel not in line)
        assert f"{e['test']['accuracy']:.4f}" in acc and f"{e['baseline']['test']['accuracy']:.4f}" in acc
        # the baseline's text form, chosen on dev with the stage's rules, beside its chosen C
        best = e["baseline"]["best_params"]
        assert best["text"] in ("normalized", "raw") and {g["params"]["text"] for g in e["baseline"]["grid"]} == {"normalized", "raw"}
        assert f"| {name} | {best['text']} | C={best['C']} | normalized (" in md

    # C: no wall time in summary.json or summary.md (both committed); they are in logs/timing.json (untracked),
    # and a rerun writes the same summary.json
    assert not keys_anywhere(summary) & set(RUN_DETAIL_KEYS)
    timing = json.loads((tmp_path / "logs" / "timing.json").read_text())
    assert timing["pretraining"] == {"wall_s": 77.1, "tokens_per_s": 1955.3}
    assert timing["tasks"]["senti"]["train_seconds"] > 0 and "train_tokens_per_s" in timing["tasks"]["stance"]
    assert "| wall time (s) |" not in md and "## Fine-tuning run times" not in md and "logs/timing.json" in md
    assert not (tmp_path / "reports" / "timing.json").exists()
    before = (tmp_path / "reports" / "summary.json").read_bytes()
    invoke(args)
    assert (tmp_path / "reports" / "summary.json").read_bytes() == before


# --------------------------------------------------------------------------------------------------
# finetune stage + MLflow


def mlflow_run(tmp_path, stage: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("stage-test")
    runs = client.search_runs([exp.experiment_id], filter_string=f"tags.`twilbert.stage` = '{stage}'")
    assert len(runs) == 1
    return client, runs[0]


def artifact_paths(run) -> set[str]:
    """Artifact files of a run, read from its local artifact directory (``client.list_artifacts``
    also resolves logged models through MLflow's global tracking URI, which another test may have set)."""
    from urllib.parse import urlparse

    uri = run.info.artifact_uri
    root = Path(urlparse(uri).path) if uri.startswith("file:") else Path(uri)
    assert root.is_dir(), uri
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def test_finetune_stage_logs_per_epoch_dev_metrics_and_report_artifacts(tmp_path, tok_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    params = write_project(tmp_path, tok_path, tracking=True)
    invoke(["finetune", "--params", str(params), "--task", "senti", "--vocab-model", str(tok_path),
            "--model-out", "models/finetune/senti", "--report-out", "reports/finetune/senti"])
    import csv

    history = list(csv.DictReader(open(tmp_path / "reports" / "finetune" / "senti" / "history.csv")))
    metrics = json.loads((tmp_path / "reports" / "finetune" / "senti" / "metrics.json").read_text())
    client, run = mlflow_run(tmp_path, "finetune:senti")
    for key, col in (("dev.f1_macro", "dev_f1_macro"), ("dev.accuracy", "dev_accuracy"), ("train.loss", "train_loss")):
        series = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))
        assert [s for s, _ in series] == [1, 2]
        assert [v for _, v in series] == pytest.approx([float(h[col]) for h in history], abs=1e-6)
    assert run.data.metrics["test.f1_macro"] == pytest.approx(metrics["test"]["f1_macro"])
    assert run.data.metrics["best_dev.f1_macro"] == pytest.approx(metrics["dev"]["f1_macro"])
    assert run.data.metrics["run_info.train_seconds"] > 0  # wall time: in MLflow, not in metrics.json
    arts = artifact_paths(run)
    assert {"report/confusion.png", "report/confusion.csv", "report/class_report.md", "report/class_report.json", "report/metrics.json",
            "report/predictions.tsv", "report/history.csv"} <= arts
    assert (tmp_path / "models" / "finetune" / ".checkpoints" / "senti").is_dir()  # the default checkpoint dir, emptied


def test_finetune_stage_with_two_seeds(tmp_path, tok_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    params = write_project(tmp_path, tok_path, tracking=True, finetuning={"seeds": [5, 6]})
    invoke(["finetune", "--params", str(params), "--task", "stance", "--vocab-model", str(tok_path),
            "--model-out", "models/finetune/stance", "--report-out", "reports/finetune/stance"])
    metrics = json.loads((tmp_path / "reports" / "finetune" / "stance" / "metrics.json").read_text())
    assert metrics["seeds"] == [5, 6] and set(metrics["runs"]) == {"seed-5", "seed-6"}
    client, run = mlflow_run(tmp_path, "finetune:stance")
    for seed in (5, 6):
        steps = [m.step for m in client.get_metric_history(run.info.run_id, f"seed-{seed}/dev.stance_f1")]
        assert sorted(steps) == [1, 2]
    assert run.data.metrics["test.stance_f1"] == pytest.approx(metrics["test"]["stance_f1"])
    assert run.data.metrics["test_sd.stance_f1"] == pytest.approx(metrics["test_sd"]["stance_f1"])
    assert run.data.metrics["chosen_seed"] == metrics["chosen_seed"]
    arts = artifact_paths(run)
    assert {"report/runs/seed-5/metrics.json", "report/runs/seed-6/confusion.png", "report/metrics.json"} <= arts
