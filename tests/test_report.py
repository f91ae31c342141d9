"""The closing report: model beside baseline, Δ, runs aggregated (numpy ddof=1), chosen by dev only."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from twilbert.report import (
    ReportError,
    aggregate_runs,
    build_summary,
    load_task_report,
    render_markdown,
    write_summary,
)

SENT = {
    "task": "sentiment",
    "task_type": "single_label",
    "selection_metric": "f1_macro",
    "best_epoch": 3,
    "dev": {"accuracy": 0.61, "f1_macro": 0.5873, "pearson": 0.4},
    "test": {"accuracy": 0.6012, "f1_macro": 0.5781, "pearson": 0.39},
}
STANCE = {
    "task": "stance",
    "selection_metric": "stance_f1",
    "dev": {"accuracy": 0.52, "f1_macro": 0.49, "stance_f1": 0.5511},
    "test": {"accuracy": 0.50, "f1_macro": 0.47, "stance_f1": 0.5302},
}


def baseline(dev: dict, test: dict, sel: str) -> dict:
    per_class = {"A": {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 3}}
    return {
        "model": "tfidf + lr",
        "selection_metric": sel,
        "best_params": {"C": 1.0},
        "dev_selection": dev[sel],
        "grid": [{"params": {"C": 0.1}, "dev_selection": dev[sel] - 0.1}, {"params": {"C": 1.0}, "dev_selection": dev[sel]}],
        "dev": {**dev, "per_class": per_class},
        "test": {**test, "per_class": per_class},
        "outputs": {"dev": np.zeros((3, 2)), "test": np.zeros((3, 2))},
    }


BASE = {
    "sentiment": baseline({"accuracy": 0.58, "f1_macro": 0.5612}, {"accuracy": 0.57, "f1_macro": 0.5523}, "f1_macro"),
    "stance": baseline({"accuracy": 0.55, "f1_macro": 0.50, "stance_f1": 0.5600}, {"accuracy": 0.53, "f1_macro": 0.51, "stance_f1": 0.5404}, "stance_f1"),
}
PRE = {"steps": 116, "loss": 6.78, "mlm_accuracy": 0.0359, "rop_accuracy": 0.4375, "device": "cpu"}
EVAL = {"mlm_accuracy": 0.1234, "mlm_perplexity": 321.5, "baseline_unigram_accuracy": 0.0456, "baseline_unigram_perplexity": 654.3,
        "rop_accuracy": 0.6789, "pseudo_perplexity": float("nan")}


def test_summary_layout_and_delta():
    s = build_summary({"sentiment": SENT, "stance": STANCE}, BASE, PRE, EVAL)
    assert set(s) == {"tasks", "pretraining"} and list(s["tasks"]) == ["sentiment", "stance"]
    sent, stance = s["tasks"]["sentiment"], s["tasks"]["stance"]
    assert sent["test"] == SENT["test"] and sent["dev"] == SENT["dev"]
    assert sent["baseline"]["test"] == {"accuracy": 0.57, "f1_macro": 0.5523}  # scalars only
    assert sent["delta_test"] == pytest.approx({"accuracy": 0.6012 - 0.57, "f1_macro": 0.5781 - 0.5523})
    assert stance["delta_test"]["stance_f1"] == pytest.approx(0.5302 - 0.5404)
    assert stance["selection_metric"] == "stance_f1" and sent["info"]["best_epoch"] == 3
    assert "outputs" not in sent["baseline"] and "per_class" not in sent["baseline"]["test"]
    assert s["pretraining"]["evaluation"]["pseudo_perplexity"] is None  # NaN -> null
    assert s["pretraining"]["training"]["steps"] == 116


def test_markdown_rows_numbers_and_sign():
    md = render_markdown(build_summary({"sentiment": SENT, "stance": STANCE}, BASE, PRE, EVAL))
    main = [line for line in md.splitlines() if line.startswith("| sentiment |")][0]
    cells = [c.strip() for c in main.strip("|").split("|")]
    assert cells == ["sentiment", "f1_macro", "0.5873", "0.5781", "0.5612", "0.5523", f"+{0.5781 - 0.5523:.4f}"]
    stance = [c.strip() for c in [line for line in md.splitlines() if line.startswith("| stance |")][0].strip("|").split("|")]
    assert stance[1] == "stance_f1" and stance[-1] == f"{0.5302 - 0.5404:.4f}" and stance[-1].startswith("-")
    for needle in ("0.6012", "0.5700", "0.1234", "0.0456", "321.50", "654.30", "0.6789", "C=1.0"):
        assert needle in md, needle


def test_per_class_selection_metric_is_lifted_from_the_tables(tmp_path):
    d = tmp_path / "t"
    d.mkdir()
    report = {"selection_metric": "per_class.FAVOR.f1", "dev": {"accuracy": 0.5}, "test": {"accuracy": 0.4}}
    (d / "metrics.json").write_text(json.dumps(report))
    tables = {s: {"FAVOR": {"precision": 0.3, "recall": 0.2, "f1": f, "support": 5}} for s, f in (("dev", 0.61), ("test", 0.55))}
    (d / "class_report.json").write_text(json.dumps(tables))
    loaded = load_task_report(d)
    assert loaded["test"]["per_class"]["FAVOR"]["f1"] == 0.55
    b = {"selection_metric": "per_class.FAVOR.f1", "dev": {"per_class": {"FAVOR": {"f1": 0.5}}}, "test": {"per_class": {"FAVOR": {"f1": 0.45}}}}
    s = build_summary({"t": loaded}, {"t": b})
    assert s["tasks"]["t"]["test"]["per_class.FAVOR.f1"] == 0.55
    assert s["tasks"]["t"]["delta_test"]["per_class.FAVOR.f1"] == pytest.approx(0.10)


def test_load_task_report_reads_what_finetune_writes(tmp_path):
    from twilbert.finetune.reports import write_metrics

    write_metrics(tmp_path, {"task": "x", "selection_metric": "f1_macro", "best_dev_score": float("nan")},
                  {"f1_macro": 0.5, "per_class": {}}, {"f1_macro": 0.4})
    r = load_task_report(tmp_path)
    assert r["dev"] == {"f1_macro": 0.5} and r["test"] == {"f1_macro": 0.4} and r["best_dev_score"] is None
    with pytest.raises(ReportError, match="metrics.json: no such file"):
        load_task_report(tmp_path / "missing")


# --------------------------------------------------------------------------------------------------
# several runs


def _runs(rng):
    runs = []
    for lr in (1e-4, 5e-5):
        for seed in range(3):
            runs.append({"config": {"lr": lr}, "seed": seed, "selection_metric": "f1_macro",
                         "dev": {"f1_macro": float(rng.uniform(0.4, 0.7)), "accuracy": float(rng.uniform(0.5, 0.8))},
                         "test": {"f1_macro": float(rng.uniform(0.4, 0.7)), "accuracy": float(rng.uniform(0.5, 0.8))}})
    return runs


def test_runs_mean_sd_match_numpy_and_choice_uses_dev():
    rng = np.random.default_rng(0)
    runs = _runs(rng)
    by_lr = {lr: [r for r in runs if r["config"]["lr"] == lr] for lr in (1e-4, 5e-5)}
    dev_means = {lr: np.mean([r["dev"]["f1_macro"] for r in rs]) for lr, rs in by_lr.items()}
    winner = max(dev_means, key=dev_means.get)
    s = build_summary({"t": runs}, {})
    e = s["tasks"]["t"]
    assert e["runs"]["config"] == {"lr": winner} and e["runs"]["n"] == 3 and e["runs"]["seeds"] == [0, 1, 2]
    for split in ("dev", "test"):
        for m in ("f1_macro", "accuracy"):
            vals = [r[split][m] for r in by_lr[winner]]
            assert e[split][m] == pytest.approx(np.mean(vals))
            assert e["runs"][f"{split}_sd"][m] == pytest.approx(np.std(vals, ddof=1))
    assert [g["dev_mean"] for g in e["runs"]["grid"]] == pytest.approx([dev_means[1e-4], dev_means[5e-5]])
    # same runs as {"runs": [...]}: same result
    assert build_summary({"t": {"runs": runs, "selection_metric": "f1_macro"}}, {})["tasks"]["t"]["runs"] == e["runs"]


def test_choice_ignores_test_scores():
    # config a wins on dev, config b has far better test scores: a must be chosen
    a = [{"config": {"c": "a"}, "dev": {"f1_macro": 0.60}, "test": {"f1_macro": 0.10}} for _ in range(2)]
    b = [{"config": {"c": "b"}, "dev": {"f1_macro": 0.59}, "test": {"f1_macro": 0.99}} for _ in range(2)]
    e = aggregate_runs(b + a, "f1_macro")
    assert e["runs"]["config"] == {"c": "a"} and e["test"]["f1_macro"] == pytest.approx(0.10)


def test_a_run_without_a_value_makes_the_mean_null_and_never_wins():
    runs = [{"config": {"c": 1}, "dev": {"f1_macro": 0.9}, "test": {"f1_macro": 0.9}},
            {"config": {"c": 1}, "dev": {"f1_macro": None}, "test": {"f1_macro": 0.9}},
            {"config": {"c": 2}, "dev": {"f1_macro": 0.3}, "test": {"f1_macro": 0.3}}]
    e = aggregate_runs(runs, "f1_macro")
    assert e["runs"]["grid"][0]["dev_mean"] is None and e["runs"]["config"] == {"c": 2}


def test_markdown_shows_mean_sd_and_the_chosen_configuration(tmp_path):
    runs = _runs(np.random.default_rng(1))
    s = build_summary({"t": runs, "sentiment": SENT}, {"sentiment": BASE["sentiment"]})
    e = s["tasks"]["t"]
    md = render_markdown(s)
    sel = e["test"]["f1_macro"], e["runs"]["test_sd"]["f1_macro"]
    assert f"{sel[0]:.4f} ± {sel[1]:.4f}" in md
    chosen = [line for line in md.splitlines() if line.endswith("| chosen |")]
    assert len(chosen) == 1 and f"lr={e['runs']['config']['lr']}" in chosen[0] and "| 3 |" in chosen[0]
    assert any(line.startswith("| t (n=3) | f1_macro |") for line in md.splitlines())
    assert "No pre-training metrics" in md
    js, mdp = write_summary(s, tmp_path)
    back = json.loads(js.read_text())  # strict JSON (no NaN) that round-trips
    assert back["tasks"]["t"]["test"]["f1_macro"] == pytest.approx(sel[0]) and mdp.read_text() == md


def test_single_run_has_no_sd():
    e = aggregate_runs([{"dev": {"f1_macro": 0.5}, "test": {"f1_macro": 0.4}}], "f1_macro")
    assert e["runs"]["n"] == 1 and e["runs"]["test_sd"]["f1_macro"] is None and e["test"]["f1_macro"] == 0.4
    assert not math.isnan(e["dev"]["f1_macro"])


# --------------------------------------------------------------------------------------------------
# finetuning.seeds layout, wall times


def test_seed_runs_as_a_dict_and_the_winning_seed_in_markdown():
    runs = {f"seed-{s}": {"seed": s, "dev": {"f1_macro": d}, "test": {"f1_macro": t}} for s, d, t in ((1, 0.50, 0.70), (2, 0.60, 0.40))}
    report = {"selection_metric": "f1_macro", "seeds": [1, 2], "chosen_seed": 2, "dev": {"f1_macro": 0.55}, "test": {"f1_macro": 0.55},
              "dev_sd": {"f1_macro": 0.07}, "test_sd": {"f1_macro": 0.21}, "runs": runs}
    s = build_summary({"t": report}, {})
    e = s["tasks"]["t"]
    assert e["runs"]["seeds"] == [1, 2] and e["test"]["f1_macro"] == pytest.approx(0.55)
    assert e["runs"]["test_sd"]["f1_macro"] == pytest.approx(np.std([0.70, 0.40], ddof=1))
    assert e["info"] == {"seeds": [1, 2], "chosen_seed": 2}
    assert e["runs"] == build_summary({"t": {**report, "runs": list(runs.values())}}, {})["tasks"]["t"]["runs"]
    md = render_markdown(s)
    assert "- t: seed 2 won on dev f1_macro (seed 1: 0.5000 / 0.7000, seed 2: 0.6000 / 0.4000)" in md


def test_wall_times_stay_out_of_the_summary_and_go_to_timing(tmp_path):
    from twilbert.report import RUN_DETAIL_KEYS, build_timing

    old = {**SENT, "train_seconds": 47.5, "total_seconds": 54.6, "train_tokens_per_s": 2485.2}
    pre = {**PRE, "wall_s": 77.1, "tokens_per_s": 1955.3, "resumed_from_step": 40}
    s = build_summary({"sentiment": old}, BASE, pre, EVAL)
    assert s["tasks"]["sentiment"]["info"] == {"task": "sentiment", "task_type": "single_label", "best_epoch": 3}
    assert not set(s["pretraining"]["training"]) & set(RUN_DETAIL_KEYS) and s["pretraining"]["training"]["steps"] == 116
    timing = build_timing({"sentiment": {"train_seconds": 50.0, "total_seconds": 60.0}}, pre, {"sentiment": old})
    assert timing["tasks"]["sentiment"] == {"train_seconds": 50.0, "total_seconds": 60.0, "train_tokens_per_s": 2485.2}
    assert timing["pretraining"] == {"wall_s": 77.1, "tokens_per_s": 1955.3, "resumed_from_step": 40}
    js, md = write_summary(s, tmp_path, timing)
    assert "wall" not in js.read_text() and "seconds" not in js.read_text()
    assert json.loads((tmp_path / "timing.json").read_text()) == timing
    text = md.read_text()
    assert "| wall time (s) | 77.1 |" in text and "| sentiment | 50.0 | 60.0 | 2485.2 |" in text
    write_summary(s, tmp_path / "again", {**timing, "pretraining": {"wall_s": 99.0}})
    assert (tmp_path / "again" / "summary.json").read_bytes() == js.read_bytes()  # wall times never change the metric
