"""``twilbert.hf.model_card``: the exported classifier's README.md puts the metrics beside the baseline's
(from the report stage's ``summary.json``), the rules, and what the tokenizer's normaliser does."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("transformers")

from tests.inference.test_hf_classifier import finetuned  # noqa: E402
from twilbert.hf.classifier import export_sequence_classifier  # noqa: E402


def test_the_card_has_metrics_beside_the_baseline(tmp_path):
    _, model_dir = finetuned(tmp_path, "cls")  # task "cls" (the directory's name: no task recorded)
    reports = tmp_path / "reports"
    reports.mkdir()
    scores = {"dev": {"f1_macro": 0.61, "accuracy": 0.7}, "test": {"f1_macro": 0.55, "accuracy": 0.66}}
    baseline = {"model": "tfidf + logistic regression", "best_params": {"C": 1.0},
                "dev": {"f1_macro": 0.5, "accuracy": 0.6}, "test": {"f1_macro": 0.45, "accuracy": 0.58}}
    (reports / "summary.json").write_text(json.dumps({"tasks": {"cls": {"selection_metric": "f1_macro", **scores, "baseline": baseline}}}))
    export_sequence_classifier(model_dir, tmp_path / "hf", reports=reports)
    card = (tmp_path / "hf" / "README.md").read_text()
    assert card.startswith("---\nlanguage: es") and "pipeline_tag: text-classification" in card
    assert "| test | f1_macro | 0.5500 | 0.4500 |" in card and "| dev | accuracy | 0.7000 | 0.6000 |" in card
    assert "Baseline: `tfidf + logistic regression`" in card and "## Intended use" in card
    # fine-tuned without rules: the card says the tokenizer does not normalise
    assert "no normalisation rules recorded" in card


def test_without_reports_the_card_says_so(tmp_path):
    _, model_dir = finetuned(tmp_path, "cls")
    export_sequence_classifier(model_dir, tmp_path / "hf", reports=tmp_path / "nowhere")
    assert "No report found" in (tmp_path / "hf" / "README.md").read_text()
