"""Fine-tuning reports: metrics.json, per-class report (JSON + Markdown), confusion data and plot,
test predictions, per-epoch history, and the split rows left out (rejects.tsv). Plain files for DVC (metrics, plots) and for people.

The original printed its results to the console only (inventory §7.4); here every number that was
printed is in a file, and the per-class report is built from the labels, not parsed from text.
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
from twilbert.finetune.metrics import confusion, predictions_from_outputs

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
    path.write_text(json.dumps(_finite(obj), indent=2, ensure_ascii=False, allow_nan=False) + "\n", encoding="utf-8")


def _label_set(row: np.ndarray, labels: list[str], sep: str) -> str:
    return sep.join(labels[i] for i in np.flatnonzero(row))


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
    lines = [f"# Per-class report ({task.task_type.replace('_', '-')})", ""]
    if task.regression:
        lines += ["A regression task has no classes; see metrics.json (mse, mae, pearson).", ""]
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
    labels = task.labels
    with open(out / "confusion.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["actual", "predicted"])
        if task.regression:
            w.writerows(zip((f"{v:.6g}" for v in gold), (f"{v:.6g}" for v in pred)))
        elif task.multi_label:
            w.writerows((_label_set(g, labels, task.label_separator), _label_set(p, labels, task.label_separator)) for g, p in zip(gold, pred))
        else:
            w.writerows((labels[g], labels[p]) for g, p in zip(gold, pred))
    _plot(out / "confusion.png", task, gold, pred)


def _plot(path: Path, task: TaskConfig, gold: np.ndarray, pred: np.ndarray) -> None:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    labels = task.labels
    if task.regression:
        fig, ax = plt.subplots(figsize=(5, 5))
        ax.scatter(gold, pred, s=8, alpha=0.6)
        lo, hi = float(min(gold.min(), pred.min())), float(max(gold.max(), pred.max()))
        ax.plot([lo, hi], [lo, hi], color="grey", linewidth=1)
        ax.set_xlabel("gold")
        ax.set_ylabel("predicted")
        ax.set_title("test: gold vs predicted")
    else:
        if task.multi_label:
            g, p = gold.astype(bool), pred.astype(bool)
            mat = np.stack([(~g & ~p).sum(0), (~g & p).sum(0), (g & ~p).sum(0), (g & p).sum(0)], axis=1)  # (C, 4)
            rows, cols, xlabel, ylabel = labels, ["TN", "FP", "FN", "TP"], "outcome", "label"
        else:
            mat = confusion(gold, pred, len(labels))  # (C, C)
            rows, cols, xlabel, ylabel = labels, labels, "predicted", "gold"
        size = max(4.0, 0.5 * max(len(rows), len(cols)) + 2)
        fig, ax = plt.subplots(figsize=(size, size))
        ax.imshow(mat, cmap="Blues")
        ax.set_xticks(range(len(cols)), cols, rotation=45, ha="right")
        ax.set_yticks(range(len(rows)), rows)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if mat.size <= 400:
            top = mat.max() if mat.size else 0
            for (i, j), v in np.ndenumerate(mat):
                ax.text(j, i, str(v), ha="center", va="center", color="white" if v > top / 2 else "black", fontsize=8)
        ax.set_title("test confusion")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_predictions(out: Path, task: TaskConfig, split: TaskSplit, probs: np.ndarray) -> None:
    """``predictions.tsv``: id, text (raw), [aux], gold, predicted, then one ``p_<label>`` column per
    class (probabilities) for classification. Tabs/newlines in texts become spaces."""
    pred = predictions_from_outputs(probs, task)
    labels = task.labels
    header = ["id", "text"] + (["aux_text"] if split.aux_texts is not None else []) + ["gold", "predicted"]
    if not task.regression:
        header += [f"p_{label}" for label in labels]
    rows = []
    for i in range(len(split)):
        row = [_clean(split.ids[i]), _clean(split.texts[i])]
        if split.aux_texts is not None:
            row.append(_clean(split.aux_texts[i]))
        if task.regression:
            row += [f"{split.labels[i]:.6g}", f"{pred[i]:.6g}"]
        elif task.multi_label:
            row += [_label_set(split.labels[i], labels, task.label_separator), _label_set(pred[i], labels, task.label_separator)]
            row += [f"{v:.6f}" for v in probs[i]]
        else:
            row += [labels[int(split.labels[i])], labels[int(pred[i])]]
            row += [f"{v:.6f}" for v in probs[i]]
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
