"""`twilbert compare`: grid summaries from `dvc exp show --json`, checked on hand-built DVC output."""

from __future__ import annotations

import json
import statistics

import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.experiments import parse_exp_show, summarise, to_markdown

PATH = "reports/finetune/sent/metrics.json"


def _exp(name, lr, bs, seed, dev, test, *, error=None, runs=None):
    metrics = {"selection_metric": "f1_macro", "dev": {"f1_macro": dev}, "test": {"f1_macro": test}}
    if runs:
        metrics["runs"] = {f"seed-{s}": {"dev": {"f1_macro": d}, "test": {"f1_macro": t}} for s, d, t in runs}
    data = {"params": {"params.yaml": {"data": {"finetuning": {"lr": lr, "batch_size": bs, "seed": seed}, "model": {"n_encoders": 2}}}},
            "metrics": {PATH: {"data": metrics}} if error is None else {PATH: {"error": {"type": "FileNotFoundError", "msg": "x"}}}}
    rev = {"rev": f"{abs(hash(name)):040x}"[:40], "name": name, "data": data, "error": {"msg": error, "type": ""} if error else None}
    return {"revs": [rev], "name": name, "executor": {"state": "failed" if error else "success"}}


def _show(*exps, baseline_metrics=True):
    base = _exp("main", 0.5, 8, 0, 0.99, 0.99)["revs"][0]
    if not baseline_metrics:
        base["data"]["metrics"] = {}
    return [{"rev": "workspace", "name": None, "data": base["data"], "error": None, "experiments": None},
            {**base, "experiments": list(exps)}]


def test_groups_by_varied_params_averages_seeds_and_picks_on_dev():
    shown = _show(
        _exp("a1", 1e-4, 16, 1, 0.70, 0.60), _exp("a2", 1e-4, 16, 2, 0.72, 0.62), _exp("a3", 1e-4, 16, 3, 0.74, 0.58),
        _exp("b1", 5e-5, 16, 1, 0.65, 0.90), _exp("b2", 5e-5, 16, 2, 0.66, 0.91),  # better on test, worse on dev
        _exp("c1", 5e-5, 32, 1, 0.0, 0.0, error="Experiment run failed"),
    )
    exps = parse_exp_show(shown)
    assert [e.name for e in exps] == ["a1", "a2", "a3", "b1", "b2", "c1"]  # baseline and workspace left out
    s = summarise(exps, "sent")
    assert s["metric"] == "f1_macro" and s["varied"] == ["finetuning.batch_size", "finetuning.lr"]  # seeds are no config
    best = s["best"]
    assert best["config"] == {"finetuning.batch_size": 16, "finetuning.lr": 1e-4} and best["runs"] == 3
    assert best["dev_mean"] == pytest.approx(statistics.mean([0.70, 0.72, 0.74]))
    assert best["dev_sd"] == pytest.approx(statistics.stdev([0.70, 0.72, 0.74]))
    assert best["test_mean"] == pytest.approx(statistics.mean([0.60, 0.62, 0.58]))
    assert [r["config"]["finetuning.lr"] for r in s["configs"]] == [1e-4, 5e-5]  # dev order, test ignored
    assert s["failed"] == [{"experiment": "c1", "config": {"finetuning.batch_size": 32, "finetuning.lr": 5e-5}, "error": "Experiment run failed"}]
    md = to_markdown(s)
    assert "**best on dev**" in md and "c1 (finetuning.batch_size=32, finetuning.lr=5e-05)" in md
    assert f"{statistics.mean([0.70, 0.72, 0.74]):.4f} ± {statistics.stdev([0.70, 0.72, 0.74]):.4f}" in md


def test_in_run_seeds_count_as_runs():
    """finetuning.seeds puts every seed's values under runs.seed-<s> in one experiment's metrics."""
    shown = _show(_exp("x", 1e-4, 16, 1, 0.5, 0.5, runs=[(1, 0.6, 0.5), (2, 0.8, 0.7)]), _exp("y", 2e-4, 16, 1, 0.65, 0.6))
    s = summarise(parse_exp_show(shown), "sent")
    x = next(r for r in s["configs"] if r["config"]["finetuning.lr"] == 1e-4)
    assert x["runs"] == 2 and x["dev"] == [0.6, 0.8] and x["seeds"] == ["seed-1", "seed-2"]
    assert s["best"] is x  # mean 0.70 beats the single run's 0.65


def test_baseline_is_a_point_only_when_asked():
    shown = _show(_exp("a", 1e-4, 16, 1, 0.5, 0.5))
    assert [e.name for e in parse_exp_show(shown, include_baseline=True)] == ["main", "a"]
    assert [e.name for e in parse_exp_show(_show(_exp("a", 1e-4, 16, 1, 0.5, 0.5), baseline_metrics=False), include_baseline=True)] == ["a"]


def test_cli_reads_saved_json_and_writes_reports(tmp_path):
    saved = tmp_path / "exps.json"
    saved.write_text(json.dumps(_show(_exp("a", 1e-4, 16, 1, 0.5, 0.4), _exp("b", 2e-4, 16, 1, 0.6, 0.3))))
    result = CliRunner().invoke(app, ["compare", "--exp-json", str(saved), "--out", str(tmp_path / "grid")])
    assert result.exit_code == 0, result.output
    assert "| 0.0002 | 1 | 0.6000 | 0.3000 | **best on dev** |" in result.output
    data = json.loads((tmp_path / "grid.json").read_text())
    assert data["tasks"][0]["best"]["config"] == {"finetuning.lr": 2e-4}
    assert (tmp_path / "grid.md").read_text() in result.output
    empty = tmp_path / "none.json"
    empty.write_text(json.dumps(_show()))
    bad = CliRunner().invoke(app, ["compare", "--exp-json", str(empty)])
    assert bad.exit_code == 2 and "no experiments found" in bad.stderr


def test_exp_show_runs_this_interpreter_s_dvc_without_a_venv_on_path(monkeypatch):
    """`.venv/bin/twilbert compare` without an activated venv: no `dvc` on PATH, git still there."""
    import shutil
    import sys
    from pathlib import Path

    from pipeline.experiments import load_exp_show

    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    assert shutil.which("dvc") is None or not shutil.which("dvc").startswith(str(Path(sys.executable).parent))
    shown = load_exp_show(Path(__file__).resolve().parents[2])
    assert isinstance(shown, list) and shown and "rev" in shown[0]


def test_speed_and_bookkeeping_sections_never_split_a_configuration():
    """`-S impl.n_gpus=8` or `-S run.log_every=1` changes how a run goes, not what it trains: two seeds
    of one recipe stay one configuration whatever their impl / run / tracking values."""
    a, b = _exp("a", 1e-4, 16, 1, 0.70, 0.60), _exp("b", 1e-4, 16, 2, 0.72, 0.62)
    for exp, gpus, every in ((a, 1, 5), (b, 8, 1)):
        data = exp["revs"][0]["data"]["params"]["params.yaml"]["data"]
        data.update({"impl": {"n_gpus": gpus}, "run": {"log_every": every}, "tracking": {"group": exp["name"]}})
    s = summarise(parse_exp_show(_show(a, b)), "sent")
    assert s["varied"] == [] and s["best"]["runs"] == 2
