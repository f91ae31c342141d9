"""The ``README.md`` model card of an exported classifier: what a Hub user needs before trusting it.

Base model (the encoder's lineage: imports, continued pre-training), data (the task's rows), the text
rules, metrics with the baseline's beside them (``reports/summary.json``, written by the report stage;
else the task's ``reports/finetune/<task>/metrics.json`` alone), intended use, and how far the
tokenizer's built-in normalisation agrees with ``twilbert predict`` (measured, per rule set).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _find_reports(model_dir: Path, task: str, reports: str | Path | None) -> tuple[dict | None, dict | None]:
    """(``summary.json``'s entry for ``task``, the task's ``metrics.json``) from ``reports`` or the
    ``reports/`` directory of the repository holding ``model_dir``."""
    roots = [Path(reports)] if reports is not None else [p / "reports" for p in model_dir.resolve().parents]
    for root in roots:
        summary, metrics = root / "summary.json", root / "finetune" / task / "metrics.json"
        if summary.is_file() or metrics.is_file():
            entry = json.loads(summary.read_text())["tasks"].get(task) if summary.is_file() else None
            return entry, json.loads(metrics.read_text()) if metrics.is_file() else None
    return None, None


def _fmt(x: Any) -> str:
    return f"{x:.4f}" if isinstance(x, (int, float)) else "n/a"


def _metrics_table(ft, summary: dict | None, metrics: dict | None) -> list[str]:
    selection = (summary or metrics or {}).get("selection_metric") or ft.config.get("selection_metric") or "f1_macro"
    source = summary or metrics
    if source is None:
        return ["No report found (pass `reports` / run the report stage); best dev score stored with the model: "
                f"{_fmt(ft.config.get('best_dev_score'))}."]
    baseline = (summary or {}).get("baseline") or {}
    rows = ["| split | metric | this model | baseline |", "|---|---|---:|---:|"]
    for split in ("dev", "test"):
        for metric in dict.fromkeys([selection, "accuracy", "f1_macro"]):
            ours = (source.get(split) or {}).get(metric)
            if ours is None:
                continue
            rows.append(f"| {split} | {metric} | {_fmt(ours)} | {_fmt((baseline.get(split) or {}).get(metric))} |")
    if baseline.get("model"):
        rows += ["", f"Baseline: `{baseline['model']}`, tuned on dev only (best {baseline.get('best_params')})."]
    else:
        rows += ["", "No baseline recorded (run the report stage for `reports/summary.json`)."]
    return rows


def _lineage_lines(model_dir: Path) -> list[str]:
    from twilbert.hf.export import lineage

    out = []
    for directory, kind, meta in lineage(model_dir)[1:]:
        if kind == "imported":
            out.append(f"* imported from `{meta['imported_from']}` ({meta.get('hf_model_type')}) with `twilbert import-hf`")
        else:
            steps = meta.get("step")
            out.append(f"* pre-trained (MLM + reply order prediction) here: `{directory}`" + (f", {steps} steps" if steps else ""))
    return out or ["* trained from scratch by this pipeline"]


def _normalizer_lines(ft, info: dict[str, Any]) -> list[str]:
    from twilbert.hf.classifier import MEASURED_AGREEMENT
    from twilbert.hf.normalizers import effective, inexact_rules

    rules = ft.config.get("normalize")
    if not rules:
        return ["The model was fine-tuned on text as given (no normalisation rules recorded): the tokenizer does not normalise."]
    if not info.get("tokenizer_normalizes_tweets"):
        return ["The tokenizer does **not** normalise: apply the rules below first (`twilbert.text.normalize.normalize_texts`)."]
    r = effective(rules)
    lines = [
        "The tokenizer applies the rules itself (as `tokenizers` normalizers), so the pipeline takes **raw tweets**.",
    ]
    inexact = inexact_rules(r)
    lines += [f"* not exact: {x}" for x in inexact] or ["* every rule is expressed exactly."]
    measured = ", ".join(f"`{k}` rules {v:.2%}" for k, v in MEASURED_AGREEMENT.items() if v is not None)
    if measured:
        lines.append(
            f"* measured agreement with `twilbert predict` (same token ids, hence the same label) on 27 564 real Spanish tweets: {measured} "
            "(`benchmarks/normalizer_agreement.py`)."
        )
    return lines


def model_card(model_dir: Path, ft, info: dict[str, Any], reports: str | Path | None = None) -> str:
    """The card's Markdown (YAML front matter for the Hub first)."""
    task = ft.config.get("task", Path(model_dir).name)
    summary, metrics = _find_reports(Path(model_dir), task, reports)
    data = (metrics or {}).get("data") or (summary or {}).get("info", {}).get("data") or {}
    rules = ft.config.get("normalize") or {}
    labels = ", ".join(f"`{lab}`" for lab in ft.labels) or "one value (regression)"
    lines = [
        "---",
        "language: es",
        "library_name: transformers",
        "pipeline_tag: text-classification",
        "tags: [twitter, spanish, twilbert]",
        "---",
        f"# {task}: a TWilBERT fine-tuned {info['architecture']}",
        "",
        f"Task type `{ft.config.get('task_type')}` ({info['problem_type']}), labels: {labels}. "
        f"Exported by `twilbert export-hf` from `{model_dir}` (collapse_mode `{info['collapse_mode']}`; "
        f"max |difference| of probabilities on a probe batch: {info.get('max_abs_diff_probabilities', float('nan')):.2g}).",
        "",
        "## Use",
        "",
        "```python",
        "from transformers import pipeline",
        'clf = pipeline("text-classification", model="path/to/this/directory", truncation=True)',
        'clf("@Pepe_88 JAJAJA no me lo puedo creer 😂 https://t.co/xyz")',
        "```",
        "",
        "## Base model",
        "",
        *_lineage_lines(Path(model_dir)),
        "",
        "## Data",
        "",
        f"Task `{task}`: " + (", ".join(f"{split} {d.get('rows_used')} rows" for split, d in data.items()) if data else "row counts not recorded") + ".",
        f"Texts were cut to {ft.config.get('max_len')} tokens (the tokenizer truncates there with `truncation=True`).",
        "",
        "## Text rules",
        "",
        "The `normalize.rules` the model was fine-tuned with, every rule concrete:",
        "",
        "```json",
        json.dumps({k: v for k, v in rules.items()}, ensure_ascii=False, sort_keys=True),
        "```",
        "",
        *_normalizer_lines(ft, info),
        "",
        "## Metrics",
        "",
        *_metrics_table(ft, summary, metrics),
        "",
        "## Intended use",
        "",
        f"Research on Spanish tweets for the `{task}` task, on text like the training data. Scores above come from one "
        "fine-tuning run on the splits named; they say nothing about other domains, periods or dialects. Not for "
        "decisions about individual people without human review.",
        "",
    ]
    return "\n".join(lines)
