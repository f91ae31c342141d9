"""finetuning.seeds: one model per seed, mean ± sd in metrics.json, per-seed metrics, the
best-dev seed saved as the task's model, resumable across seeds, and the report's mean ± sd beside the
baseline with the winning seed named."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from tests.finetune.test_finetune_e2e import CPU, LABELS, make_task, read_tsv, reload_and_predict, tiny_model_config, tok_path, write_task  # noqa: F401
from twilbert.finetune.config import FinetuningConfig
from twilbert.finetune.runs import choose_run, finetune_runs
from twilbert.finetune.train import Trainer

CATS = {lab: i for i, lab in enumerate(LABELS)}
FT = FinetuningConfig(epochs=2, batch_size=8, max_len=12, path_load_weights="random", lr=1e-2, seeds=(3, 4))


@pytest.fixture
def task(tmp_path):
    write_task(tmp_path / "task")
    return make_task(tmp_path / "task", categories=CATS)


def run(tmp_path, tok_path, task, ft=FT, sub="run", **kw):
    return finetune_runs("t", task, ft, tokenizer_path=tok_path, rules=None, model_out=tmp_path / sub / "model",
                         report_out=tmp_path / sub / "reports", model_config=tiny_model_config(tok_path), impl=CPU,
                         progress=False, checkpoint_dir=tmp_path / sub / "ckpt", **kw)


def test_two_seeds_mean_sd_per_seed_files_and_the_best_dev_model(tmp_path, tok_path, task):
    logged = []
    res = run(tmp_path, tok_path, task, log_fn=lambda m, e: logged.append((e, m)))
    reports = tmp_path / "run" / "reports"
    per_seed = {s: json.loads((reports / "runs" / f"seed-{s}" / "metrics.json").read_text()) for s in (3, 4)}
    main = json.loads((reports / "metrics.json").read_text())
    assert main["seeds"] == [3, 4] and main["n_runs"] == 2 and per_seed[3]["seed"] == 3 and per_seed[4]["seed"] == 4
    # mean and sample sd over the seeds' own files, every metric
    for split in ("dev", "test"):
        for m in per_seed[3][split]:
            vals = [per_seed[s][split][m] for s in (3, 4)]
            assert main[split][m] == pytest.approx(np.mean(vals)), (split, m)
            assert main[f"{split}_sd"][m] == pytest.approx(np.std(vals, ddof=1)), (split, m)
            assert main["runs"][f"seed-3"][split][m] == per_seed[3][split][m]
    assert main["test_sd"]["f1_macro"] > 0 or main["dev_sd"]["f1_macro"] > 0  # the seeds really differ
    # the saved model is the seed with the best dev score (ties: the first)
    dev = {s: per_seed[s]["best_dev_score"] for s in (3, 4)}
    chosen = 3 if dev[3] >= dev[4] else 4
    assert main["chosen_seed"] == chosen == res["chosen_seed"] and "dev" in main["chosen_by"]
    assert json.loads((tmp_path / "run" / "model" / "config.json").read_text())["finetuning"]["seed"] == chosen
    assert (reports / "predictions.tsv").read_bytes() == (reports / "runs" / f"seed-{chosen}" / "predictions.tsv").read_bytes()
    test = read_tsv(tmp_path / "task" / "test.tsv")
    probs, _ = reload_and_predict(tmp_path / "run" / "model", test["TEXT"].to_list(), None)
    pred = read_tsv(reports / "runs" / f"seed-{chosen}" / "predictions.tsv")
    np.testing.assert_allclose(probs, np.stack([pred[f"p_{lab}"].cast(float).to_numpy() for lab in LABELS], 1), atol=2e-6)
    # per-seed MLflow series, step = epoch; no checkpoints left, the directory kept
    assert sorted((e, k) for e, m in logged for k in m if k.endswith("/dev.f1_macro")) == [
        (1, "seed-3/dev.f1_macro"), (1, "seed-4/dev.f1_macro"), (2, "seed-3/dev.f1_macro"), (2, "seed-4/dev.f1_macro")]
    assert (tmp_path / "run" / "ckpt").is_dir() and not list((tmp_path / "run" / "ckpt").iterdir())
    assert "seconds" not in (reports / "metrics.json").read_text()
    assert set(json.loads((reports / "run_info.json").read_text())["runs"]) == {"seed-3", "seed-4"}


def test_without_seeds_it_is_one_run(tmp_path, tok_path, task):
    res = run(tmp_path, tok_path, task, ft=replace(FT, seeds=None, seed=3))
    assert res["seed"] == 3 and "runs" not in res
    reports = tmp_path / "run" / "reports"
    assert "runs" not in json.loads((reports / "metrics.json").read_text())
    assert sorted(p.name for p in (reports / "runs").iterdir()) == ["seed-3"]  # the same layout, so dvc.yaml can declare runs/
    assert (reports / "runs" / "seed-3" / "metrics.json").read_bytes() == (reports / "metrics.json").read_bytes()


def test_choice_is_by_dev_never_test():
    runs = {"seed-1": {"dev_selection": 0.50, "test_selection": 0.99}, "seed-2": {"dev_selection": 0.60, "test_selection": 0.10},
            "seed-3": {"dev_selection": 0.60, "test_selection": 0.20}, "seed-4": {"dev_selection": float("nan"), "test_selection": 1.0}}
    assert choose_run(runs) == "seed-2"  # best dev; ties keep the first; NaN never wins


def test_a_kill_during_the_second_seed_redoes_no_finished_seed(tmp_path, tok_path, task, monkeypatch):
    run(tmp_path, tok_path, task, sub="ref")
    original = Trainer.train_epoch
    calls = []

    def killing(self, *a, **k):
        calls.append(1)
        if len(calls) == 4:  # seed 4's second epoch
            raise KeyboardInterrupt
        return original(self, *a, **k)

    with monkeypatch.context() as m:
        m.setattr(Trainer, "train_epoch", killing)
        with pytest.raises(KeyboardInterrupt):
            run(tmp_path, tok_path, task, sub="cut")
    calls.clear()
    monkeypatch.setattr(Trainer, "train_epoch", lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    run(tmp_path, tok_path, task, sub="cut")
    assert len(calls) == 1  # only seed 4's last epoch
    for f in ("metrics.json", "predictions.tsv", "runs/seed-3/metrics.json", "runs/seed-4/history.csv"):
        assert (tmp_path / "cut" / "reports" / f).read_bytes() == (tmp_path / "ref" / "reports" / f).read_bytes(), f
    a, b = (load_file(str(tmp_path / s / "model" / "model.safetensors")) for s in ("ref", "cut"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_seeds_are_validated():
    from twilbert.config import ConfigError, from_dict

    with pytest.raises(ConfigError, match=r"finetuning\.seeds: repeated seeds in \[1, 1\]"):
        from_dict(FinetuningConfig, {"seeds": [1, 1]}, "finetuning")
    with pytest.raises(ConfigError, match=r"finetuning\.seeds: must list at least one seed"):
        from_dict(FinetuningConfig, {"seeds": []}, "finetuning")
    assert from_dict(FinetuningConfig, {"seeds": [1, 2]}, "finetuning").seeds == (1, 2)


def test_report_shows_mean_sd_beside_the_baseline_and_the_winning_seed(tmp_path, tok_path, task):
    from twilbert.finetune.baseline import run_baseline
    from twilbert.report import build_summary, load_task_report, render_markdown

    run(tmp_path, tok_path, task)
    main = json.loads((tmp_path / "run" / "reports" / "metrics.json").read_text())
    s = build_summary({"t": load_task_report(tmp_path / "run" / "reports")}, {"t": run_baseline(task, rules=None, seed=0)})
    e = s["tasks"]["t"]
    assert e["runs"]["n"] == 2 and e["runs"]["seeds"] == [3, 4]
    assert e["test"]["f1_macro"] == pytest.approx(main["test"]["f1_macro"]) and e["runs"]["test_sd"]["f1_macro"] == pytest.approx(main["test_sd"]["f1_macro"])
    assert e["info"]["chosen_seed"] == main["chosen_seed"] and "dev_sd" not in e["info"]
    md = render_markdown(s)
    row = next(line for line in md.splitlines() if line.startswith("| t (n=2) | f1_macro |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[3] == f"{main['test']['f1_macro']:.4f} ± {main['test_sd']['f1_macro']:.4f}"
    assert cells[5] == f"{e['baseline']['test']['f1_macro']:.4f}"  # the baseline beside it
    won = next(line for line in md.splitlines() if line.startswith("- t: seed"))
    assert won.startswith(f"- t: seed {main['chosen_seed']} won on dev f1_macro")
    for seed in (3, 4):
        r = main["runs"][f"seed-{seed}"]
        assert f"seed {seed}: {r['dev']['f1_macro']:.4f} / {r['test']['f1_macro']:.4f}" in won
