"""Fine-tuning reports: metrics.json, per-class report (JSON + Markdown), confusion data and plot,
test predictions, per-epoch history, and the split rows left out (rejects.tsv). Plain files for DVC
(metrics, plots) and for people. How a label reads in a row, and the plot, are the task type's.

The original printed its results to the console only; here every number that was printed is in a
file, and the per-class report is built from the labels, not parsed from text.
"""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from twilbert.finetune.config import TaskConfig
from twilbert.finetune.data import TaskSplit
from twilbert.finetune.metrics import predictions_from_outputs
from twilbert.utils import atomic_write_text

REPORT_FILES = ("metrics.json", "class_report.json", "class_report.md", "confusion.png", "confusion.csv", "predictions.tsv", "history.csv",
                "rejects.tsv")
REJECTS_FILE = "rejects.tsv"
REJECTS_HEADER = ("file", "line", "id", "reason", "also_in")
RUN_INFO_FILE = "run_info.json"  # wall times and resume details: change on every run, so not in metrics.json
_CONTROL_SPACE = re.compile(r"[\t\r\n]")


def scalar_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The numeric entries (per-class tables left out): for metrics.json and for trackers."""
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _clean(text: str) -> str:
    """One line, one field: tabs and newlines become spaces (predictions.tsv is read without quoting)."""
    return _CONTROL_SPACE.sub(" ", text)


def _finite(obj: Any) -> Any:
    """NaN/inf -> null (a diverged run must still write valid JSON)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def write_json(path: Path, obj: Any) -> None:
    """Strict JSON (NaN/inf -> null), indented, UTF-8."""
    atomic_write_text(path, json.dumps(_finite(obj), indent=2, ensure_ascii=False, allow_nan=False) + "\n")


def write_rejects(out: Path, splits: dict[str, TaskSplit]) -> int:
    """``rejects.tsv``: one row per row read from a split file and left out (file, line, id, reason,
    also_in = ``<file>:<line>`` of the same id in an earlier split), in split then line order. Always
    written (a header alone when nothing was left out), so it is a stable DVC output. Returns the count."""
    rows = [r for s in splits.values() for r in s.rejected]
    body = "".join("\t".join([_clean(str(r.path)), str(r.line), _clean(r.id), r.reason, _clean(r.also_in)]) + "\n" for r in rows)
    (out / REJECTS_FILE).write_text("\t".join(REJECTS_HEADER) + "\n" + body, encoding="utf-8")
    return len(rows)


def write_metrics(out: Path, summary: dict[str, Any], dev: dict[str, Any], test: dict[str, Any]) -> None:
    write_json(out / "metrics.json", {**summary, "dev": scalar_metrics(dev), "test": scalar_metrics(test)})


def write_class_report(out: Path, task: TaskConfig, dev: dict[str, Any], test: dict[str, Any]) -> None:
    """Per-class precision / recall / F1 / support for dev and test (empty for regression)."""
    report = {"dev": dev.get("per_class", {}), "test": test.get("per_class", {})}
    write_json(out / "class_report.json", report)
    lines = [f"# Per-class report ({task.kind.title})", "", *task.kind.class_report_note()]
    for split in ("dev", "test"):
        if not report[split]:
            continue
        lines += [f"## {split}", "", "| label | precision | recall | f1 | support |", "|---|---:|---:|---:|---:|"]
        for label, r in report[split].items():
            lines.append(f"| {label} | {r['precision']:.4f} | {r['recall']:.4f} | {r['f1']:.4f} | {r['support']} |")
        m = dev if split == "dev" else test
        lines += ["", "accuracy {:.4f}, macro-F1 {:.4f}, micro-F1 {:.4f}, weighted-F1 {:.4f}".format(
            m["accuracy"], m["f1_macro"], m["f1_micro"], m["f1_weighted"]), ""]
    (out / "class_report.md").write_text("\n".join(lines), encoding="utf-8")


def write_confusion(out: Path, task: TaskConfig, gold: np.ndarray, probs: np.ndarray) -> None:
    """``confusion.csv`` (``actual,predicted``, one row per test example: DVC's confusion template;
    multi-label rows hold label sets joined by the separator, regression rows the values) and
    ``confusion.png`` (a confusion matrix; per-label TN/FP/FN/TP for multi-label; a scatter for regression)."""
    pred = predictions_from_outputs(probs, task)
    text = task.kind.label_text
    with open(out / "confusion.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["actual", "predicted"])
        w.writerows((text(g, task), text(p, task)) for g, p in zip(gold, pred))
    _plot(out / "confusion.png", task, gold, pred)


def _plot(path: Path, task: TaskConfig, gold: np.ndarray, pred: np.ndarray) -> None:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig = task.kind.plot(plt, gold, pred, task)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_predictions(out: Path, task: TaskConfig, split: TaskSplit, probs: np.ndarray) -> None:
    """``predictions.tsv``: id, text (raw), [aux], gold, predicted, then one ``p_<label>`` column per
    class (probabilities) for classification. Tabs/newlines in texts become spaces."""
    pred = predictions_from_outputs(probs, task)
    text = task.kind.label_text
    prob_columns = task.kind.probability_columns(task)
    prob_rows = probs.reshape(len(probs), -1)  # (N, len(prob_columns)) whatever the type's layout
    header = ["id", "text"] + (["aux_text"] if split.aux_texts is not None else []) + ["gold", "predicted"] + prob_columns
    rows = []
    for i in range(len(split)):
        row = [_clean(split.ids[i]), _clean(split.texts[i])]
        if split.aux_texts is not None:
            row.append(_clean(split.aux_texts[i]))
        row += [text(split.labels[i], task), text(pred[i], task)]
        if prob_columns:
            row += [f"{v:.6f}" for v in prob_rows[i]]
        rows.append("\t".join(row))
    (out / "predictions.tsv").write_text("\t".join(header) + "\n" + "".join(r + "\n" for r in rows), encoding="utf-8")


def write_history(out: Path, history: list[dict[str, Any]]) -> None:
    """One row per epoch: epoch, train_loss, lr, dev selection score and the dev scalar metrics."""
    if not history:
        return
    fields = list(dict.fromkeys(k for h in history for k in h))
    with open(out / "history.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for h in history:
            w.writerow({k: (round(v, 6) if isinstance(v, float) and math.isfinite(v) else v) for k, v in h.items()})


__all__ = [
    "REJECTS_FILE",
    "REPORT_FILES",
    "RUN_INFO_FILE",
    "scalar_metrics",
    "write_class_report",
    "write_confusion",
    "write_history",
    "write_json",
    "write_metrics",
    "write_predictions",
    "write_rejects",
]
