"""The closing report: every task's fine-tuned model beside its classical baseline, and pre-training.

Reads what the stages wrote (``reports/finetune/<task>/metrics.json`` and ``class_report.json``,
``reports/pretrain/metrics.json``, ``reports/evaluate/metrics.json``) and the baselines of
:func:`twilbert.finetune.baseline.run_baseline`; writes ``summary.json`` (a DVC metric: the same on
every rerun of the same inputs), ``summary.md`` (tables a person reads) and ``timing.json`` (wall
times, throughput: :data:`RUN_DETAIL_KEYS`, never in summary.json). Several runs per task are grouped
by config and the best **dev** mean wins (test never takes part); a mean over runs where one run lacks
a value is null. The layout of summary.json and the grouping rules: docs/reports.md.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from twilbert.config import ConfigError
from twilbert.metadata import fields, read_json
from twilbert.finetune.metrics import mean_sd
from twilbert.utils import atomic_write_text

_NUMBER = (int, float, np.integer, np.floating)
SAMPLE_DIR = Path("data") / "sample"  # the bundled synthetic sample (data/README.md)


class ReportError(ConfigError):
    """A report input that cannot be used (missing or unreadable file); one line for the CLI."""


# --------------------------------------------------------------------------------------------------
# reading


_METRICS = fields(required={"dev": dict, "test": dict})


def _read_json(path: Path, schema=None) -> Any:
    return read_json(path, schema=schema, error=ReportError, allow_nan=True)  # metrics may be NaN (pearson of a constant)


def load_task_report(report_dir: str | Path) -> dict[str, Any]:
    """``report_dir/metrics.json`` (written by :func:`twilbert.finetune.train.finetune_task`: the run's
    summary plus ``dev`` / ``test`` scalar metrics), with the per-class tables of
    ``class_report.json`` (when present) put back into ``dev`` / ``test`` as ``per_class``."""
    report_dir = Path(report_dir)
    path = report_dir / "metrics.json"
    if not path.is_file():
        raise ReportError(f"{path}: no such file (run the finetune stage for this task first)")
    report = _read_json(path, _METRICS)
    per_class = report_dir / "class_report.json"
    if per_class.is_file():
        tables = _read_json(per_class, fields(optional={"dev": (dict, None), "test": (dict, None)}))
        for split in ("dev", "test"):
            if tables.get(split):
                report[split] = {**report[split], "per_class": tables[split]}
    return report


# --------------------------------------------------------------------------------------------------
# metric blocks


def _is_number(v: Any) -> bool:
    return isinstance(v, _NUMBER) and not isinstance(v, bool)


def lookup(block: dict[str, Any], name: str) -> float | None:
    """``block[name]``, or a per-class value for ``per_class.<label>.<metric>``; None when absent."""
    if name in block:
        v = block[name]
        return float(v) if _is_number(v) else None
    if name.startswith("per_class."):
        _, rest = name.split(".", 1)
        label, _, metric = rest.rpartition(".")
        v = block.get("per_class", {}).get(label, {}).get(metric)
        return float(v) if _is_number(v) else None
    return None


def scalar_block(block: dict[str, Any] | None, selection: str | None = None) -> dict[str, float | None]:
    """The scalar metrics of a block (numbers as floats, nulls kept), plus the selection metric when
    it lives in the per-class table."""
    if not block:
        return {}
    out = {k: (float(v) if _is_number(v) else None) for k, v in block.items() if v is None or _is_number(v)}
    if selection is not None and selection not in out:
        v = lookup(block, selection)
        if v is not None:
            out[selection] = v
    return out


def _finite(v: float | None) -> bool:
    return v is not None and math.isfinite(v)


def _delta(model: dict[str, float | None], baseline: dict[str, float | None]) -> dict[str, float]:
    return {k: model[k] - baseline[k] for k in model if k in baseline and _finite(model[k]) and _finite(baseline[k])}


# --------------------------------------------------------------------------------------------------
# several runs per task


def _aggregate(runs: list[dict[str, Any]], split: str, selection: str) -> tuple[dict, dict]:
    blocks = [scalar_block(r.get(split), selection) for r in runs]
    keys = list(dict.fromkeys(k for b in blocks for k in b))
    stats = {k: mean_sd([b.get(k) for b in blocks]) for k in keys}
    return {k: m for k, (m, _) in stats.items()}, {k: s for k, (_, s) in stats.items()}


def aggregate_runs(runs: list[dict[str, Any]], selection: str) -> dict[str, Any]:
    """Group runs by ``config``, aggregate each group, pick the group with the best dev mean.

    Returns ``{"dev", "test" (the winner's means), "runs": {"n", "dev_sd", "test_sd", "config",
    "seeds", "grid": [{"config", "n", "dev_mean", "dev_sd"}], "per_run": [{"seed", "dev", "test"}]
    (the winner's runs, selection metric), "chosen_by"}}``.
    """
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in runs:
        groups.setdefault(json.dumps(r.get("config"), sort_keys=True, default=str), []).append(r)
    grid, best = [], None
    for members in groups.values():
        dev_mean, dev_sd = _aggregate(members, "dev", selection)
        m, s = dev_mean.get(selection), dev_sd.get(selection)
        grid.append({"config": members[0].get("config"), "n": len(members), "dev_mean": m, "dev_sd": s})
        rank = m if _finite(m) else float("-inf")
        if best is None or rank > best[0]:  # strict: ties keep the first group
            best = (rank, members, dev_mean, dev_sd)
    assert best is not None, "aggregate_runs needs at least one run"
    _, members, dev_mean, dev_sd = best
    test_mean, test_sd = _aggregate(members, "test", selection)
    seeds = [r["seed"] for r in members if "seed" in r]
    per_run = [{"seed": r.get("seed"), "dev": lookup(r.get("dev") or {}, selection), "test": lookup(r.get("test") or {}, selection)}
               for r in members]
    return {
        "dev": dev_mean,
        "test": test_mean,
        "runs": {
            "n": len(members),
            "dev_sd": dev_sd,
            "test_sd": test_sd,
            "config": members[0].get("config"),
            "seeds": seeds,
            "grid": grid,
            "per_run": per_run,
            "chosen_by": f"dev mean of {selection}",
        },
    }


# --------------------------------------------------------------------------------------------------
# the summary


_BASELINE_KEEP = ("model", "selection_metric", "best_params", "dev_selection", "grid", "train_examples", "features", "converged")  # no wall time: summary.json must be reproducible


def _baseline_entry(b: dict[str, Any] | None, selection: str | None) -> dict[str, Any] | None:
    """JSON-ready baseline: scalar metrics, no per-class tables, no prediction arrays (``outputs``)."""
    if b is None:
        return None
    sel = selection or b.get("selection_metric")
    out = {k: b[k] for k in _BASELINE_KEEP if k in b}
    out["dev"] = scalar_block(b.get("dev"), sel)
    out["test"] = scalar_block(b.get("test"), sel)
    return out


# Values that change on every rerun (wall clock, throughput, where a run resumed): never in
# summary.json (a DVC metric, so it must be the same on a rerun), but in timing.json beside it.
TIMING_FILE = "timing.json"
RUN_DETAIL_KEYS = ("train_seconds", "total_seconds", "train_tokens_per_s", "wall_s", "seconds", "tokens_per_s", "mfu",
                   "resumed_from_epoch", "resumed_from_step", "checkpoint_dir")


def _info(report: dict[str, Any], drop: tuple[str, ...]) -> dict[str, Any]:
    return {k: v for k, v in report.items() if k not in drop and k not in RUN_DETAIL_KEYS}


def _model_entry(report: dict[str, Any] | list | None) -> dict[str, Any]:
    if report is None:
        return {"selection_metric": None, "dev": {}, "test": {}}
    runs = report if isinstance(report, list) else report.get("runs")
    if isinstance(runs, dict):  # finetuning.seeds: {"seed-<s>": run} (a dict, so DVC flattens it)
        runs = list(runs.values())
    if runs is not None:
        if not runs:
            raise ReportError("a task report with an empty list of runs")
        head = report if isinstance(report, dict) else {}
        selection = head.get("selection_metric") or runs[0].get("selection_metric")
        agg = aggregate_runs(runs, selection)
        info = _info(head, ("runs", "dev", "test", "dev_sd", "test_sd", "selection_metric"))
        return {"selection_metric": selection, "dev": agg["dev"], "test": agg["test"], "info": info, "runs": agg["runs"]}
    selection = report.get("selection_metric")
    info = _info(report, ("dev", "test", "selection_metric"))
    return {"selection_metric": selection, "dev": scalar_block(report.get("dev"), selection), "test": scalar_block(report.get("test"), selection), "info": info}


def _pick(metrics: dict[str, Any] | None) -> dict[str, Any] | None:
    """Scalars (numbers, strings, booleans, nulls) of a metrics file; NaN becomes null."""
    if metrics is None:
        return None
    out = {}
    for k, v in metrics.items():
        if isinstance(v, (float, np.floating)):
            out[k] = float(v) if math.isfinite(v) else None
        elif _is_number(v):
            out[k] = int(v)
        elif v is None or isinstance(v, (str, bool)):
            out[k] = v
    return out


def build_summary(
    task_reports: dict[str, dict[str, Any] | list[dict[str, Any]] | None],
    baselines: dict[str, dict[str, Any] | None],
    pretraining: dict[str, Any] | None = None,
    evaluation: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One entry per task (those of ``task_reports``, then any only in ``baselines``), model beside
    baseline, plus ``pretraining = {"training": <pretrain metrics.json>, "evaluation": <evaluate
    metrics.json>}`` (either may be None). See the module docstring for the layout."""
    tasks = {}
    for name in dict.fromkeys([*task_reports, *baselines]):
        entry = _model_entry(task_reports.get(name))
        b = baselines.get(name)
        if entry["selection_metric"] is None and b is not None:
            entry["selection_metric"] = b.get("selection_metric")
        entry["baseline"] = _baseline_entry(b, entry["selection_metric"])
        entry["delta_test"] = _delta(entry["test"], entry["baseline"]["test"]) if entry["baseline"] else {}
        tasks[name] = entry
    return {"tasks": tasks, "pretraining": {"training": _drop_details(_pick(pretraining)), "evaluation": _drop_details(_pick(evaluation))}}


def _drop_details(block: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if block is None else {k: v for k, v in block.items() if k not in RUN_DETAIL_KEYS}


def build_timing(
    task_run_info: dict[str, dict[str, Any] | None],
    pretraining: dict[str, Any] | None = None,
    task_reports: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``timing.json``: what :data:`RUN_DETAIL_KEYS` keeps out of summary.json. Per task, the
    finetune stage's ``run_info.json`` (plus any such key a metrics.json still carries); for
    pre-training, those keys of its metrics.json."""
    tasks = {}
    for name in dict.fromkeys([*task_run_info, *(task_reports or {})]):
        report = (task_reports or {}).get(name)
        legacy = {k: v for k, v in report.items() if k in RUN_DETAIL_KEYS} if isinstance(report, dict) else {}
        tasks[name] = {**legacy, **(task_run_info.get(name) or {})}
    pre = _pick(pretraining)
    return {"tasks": tasks, "pretraining": None if pre is None else {k: v for k, v in pre.items() if k in RUN_DETAIL_KEYS}}


# --------------------------------------------------------------------------------------------------
# markdown


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def fmt(v: float | None, digits: int = 4, sign: bool = False) -> str:
    if not _finite(v):
        return "n/a"
    return f"{v:+.{digits}f}" if sign else f"{v:.{digits}f}"


def _pm(mean: float | None, sd: float | None) -> str:
    return fmt(mean) if sd is None or not _finite(mean) else f"{fmt(mean)} ± {fmt(sd)}"


def _model_cell(entry: dict[str, Any], split: str, metric: str | None) -> str:
    if metric is None:
        return "n/a"
    mean = entry[split].get(metric)
    runs = entry.get("runs")
    return _pm(mean, runs[f"{split}_sd"].get(metric)) if runs else fmt(mean)


def _config_text(config: Any) -> str:
    if config is None:
        return "(default)"
    if isinstance(config, dict):
        return ", ".join(f"{k}={v}" for k, v in config.items()) or "(default)"
    return str(config)


def _task_tables(tasks: dict[str, Any]) -> list[str]:
    recipes = sorted({e["baseline"]["model"] for e in tasks.values() if e.get("baseline") and "model" in e["baseline"]})
    lines = [
        "## Fine-tuned model vs baseline",
        "",
        "Scores are each task's selection metric: dev chose the model (best epoch) and the baseline (grid), "
        "test is reported once. Δ test = model − baseline. Tasks with several runs show mean ± sample sd "
        "over the n runs of the chosen configuration.",
    ]
    if recipes:
        lines += ["", "Baseline: " + "; ".join(f"`{_cell(r)}`" for r in recipes) + ", tuned on dev only."]
    lines += [
        "",
        "| task | selection metric | model dev | model test | baseline dev | baseline test | Δ test |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for name, e in tasks.items():
        sel, b = e["selection_metric"], e.get("baseline") or {}
        bdev, btest = (b.get("dev", {}).get(sel), b.get("test", {}).get(sel)) if sel else (None, None)
        label = f"{name} (n={e['runs']['n']})" if e.get("runs") else name
        lines.append(
            f"| {_cell(label)} | {_cell(sel or 'n/a')} | {_model_cell(e, 'dev', sel)} | {_model_cell(e, 'test', sel)} | "
            f"{fmt(bdev)} | {fmt(btest)} | {fmt(e['delta_test'].get(sel), sign=True) if sel else 'n/a'} |"
        )
    lines += [
        "",
        "### Test accuracy and macro-F1",
        "",
        "| task | model accuracy | baseline accuracy | Δ accuracy | model macro-F1 | baseline macro-F1 | Δ macro-F1 |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, e in tasks.items():
        bt = (e.get("baseline") or {}).get("test", {})
        cells = []
        for m in ("accuracy", "f1_macro"):
            cells += [_model_cell(e, "test", m), fmt(bt.get(m)), fmt(e["delta_test"].get(m), sign=True)]
        lines.append(f"| {_cell(name)} | " + " | ".join(cells) + " |")
    lines += ["", "### Baseline choices (dev only)", "", "| task | text | best params | dev score per grid value | features |",
              "|---|---|---|---|---:|"]
    for name, e in tasks.items():
        b = e.get("baseline")
        if not b:
            lines.append(f"| {_cell(name)} | n/a | n/a | n/a | n/a |")
            continue
        best = dict(b.get("best_params") or {})
        text = best.pop("text", "n/a")  # raw or normalized, chosen on dev beside C
        lines.append(f"| {_cell(name)} | {_cell(text)} | {_cell(_config_text(best))} | {_cell(_grid_text(b.get('grid', [])))} | "
                     f"{b.get('features', 'n/a')} |")
    return lines


def _grid_text(grid: list[dict[str, Any]]) -> str:
    """``normalized (C=0.1: 0.9500, C=1.0: 0.9667); raw (...)``: one group per text form, in grid order."""
    groups: dict[Any, list[str]] = {}
    for g in grid:
        params = dict(g["params"])
        groups.setdefault(params.pop("text", None), []).append(f"{_config_text(params)}: {fmt(g['dev_selection'])}")
    return "; ".join(", ".join(v) if k is None else f"{k} ({', '.join(v)})" for k, v in groups.items()) or "n/a"


def _runs_tables(tasks: dict[str, Any]) -> list[str]:
    multi = {n: e for n, e in tasks.items() if e.get("runs")}
    if not multi:
        return []
    lines = [
        "",
        "## Seeds and configurations",
        "",
        "mean ± sample sd (ddof 1) over n runs of each configuration. The configuration with the best dev "
        "mean of the selection metric is chosen; test is shown for the chosen one only.",
        "",
        "| task | configuration | n | dev mean ± sd | test mean ± sd | |",
        "|---|---|---:|---:|---:|---|",
    ]
    for name, e in multi.items():
        r, sel = e["runs"], e["selection_metric"]
        for g in r["grid"]:
            chosen = g["config"] == r["config"]
            test = _pm(e["test"].get(sel), r["test_sd"].get(sel)) if chosen else "—"
            lines.append(
                f"| {_cell(name)} | {_cell(_config_text(g['config']))} | {g['n']} | {_pm(g['dev_mean'], g['dev_sd'])} | {test} | {'chosen' if chosen else ''} |"
            )
    saved = [(n, e) for n, e in multi.items() if (e.get("info") or {}).get("chosen_seed") is not None]
    if saved:
        lines += ["", "Saved model per task: the seed with the best dev score (test never used). Per seed, dev / test:", ""]
        for name, e in saved:
            per_run = ", ".join(
                f"seed {p['seed']}: {fmt(p['dev'])} / {fmt(p['test'])}" for p in e["runs"].get("per_run", []) if p.get("seed") is not None
            )
            lines.append(f"- {_cell(name)}: seed {e['info']['chosen_seed']} won on dev {_cell(e['selection_metric'])} ({_cell(per_run)})")
    return lines


def _pretraining_lines(pre: dict[str, Any], timing: dict[str, Any] | None = None) -> list[str]:
    lines = ["", "## Pre-training"]
    train, ev = pre.get("training"), pre.get("evaluation")
    if train is not None and (timing or {}).get("pretraining"):
        train = {**train, **timing["pretraining"]}
    if not train and not ev:
        return lines + ["", "No pre-training metrics were found."]
    if ev:
        lines += [
            "",
            "Held-out split (evaluate stage). Context-free baselines on the same MLM targets: the most frequent "
            "train token (the argmax of the unigram distribution) for accuracy, the smoothed train unigram "
            "distribution for perplexity.",
            "",
            "| metric | model | context-free baseline |",
            "|---|---:|---:|",
            f"| MLM accuracy | {fmt(ev.get('mlm_accuracy'))} | {fmt(ev.get('baseline_unigram_accuracy'))} |",
            f"| MLM perplexity | {fmt(ev.get('mlm_perplexity'), 2)} | {fmt(ev.get('baseline_unigram_perplexity'), 2)} |",
        ]
        if "rop_accuracy" in ev:
            lines.append(f"| ROP accuracy | {fmt(ev.get('rop_accuracy'))} | |")
        if "pseudo_perplexity" in ev:
            lines.append(f"| pseudo-perplexity (PLL) | {fmt(ev.get('pseudo_perplexity'), 2)} | |")
    if train:
        rows = [
            ("steps", "steps"), ("epochs", "epochs"), ("final loss", "loss"), ("MLM accuracy (last steps)", "mlm_accuracy"),
            ("ROP accuracy (last steps)", "rop_accuracy"), ("parameters", "num_parameters"), ("tokens / s", "tokens_per_s"),
            ("wall time (s)", "wall_s"), ("device", "device"),
        ]
        lines += ["", "Training (final values of the pretrain stage):", "", "| | value |", "|---|---:|"]
        for label, key in rows:
            if key in train:
                v = train[key]
                text = fmt(v) if isinstance(v, float) and key not in ("epochs", "tokens_per_s", "wall_s") else (fmt(v, 1) if isinstance(v, float) else v)
                lines.append(f"| {label} | {_cell(text)} |")
    return lines


def _timing_lines(timing: dict[str, Any] | None) -> list[str]:
    if timing is None:  # the pipeline's summary.md is committed: its run times live elsewhere
        return ["", "Run times (wall clock, tokens/s) change on every run, so they are not in this file: see MLflow "
                "and logs/timing.json."]
    tasks = {n: t for n, t in ((timing or {}).get("tasks") or {}).items() if t}
    if not tasks:
        return []
    lines = ["", "## Fine-tuning run times", "", "Wall clock of the last run (timing.json; not a metric, it changes on every rerun).", "",
             "| task | train s | total s | train tokens / s |", "|---|---:|---:|---:|"]
    for name, t in tasks.items():
        tps = t.get("train_tokens_per_s")
        lines.append(f"| {_cell(name)} | {fmt(t.get('train_seconds'), 1)} | {fmt(t.get('total_seconds'), 1)} | {fmt(tps, 1) if tps is not None else 'n/a'} |")
    return lines


def sample_tasks(task_files: dict[str, list[str | Path]], root: str | Path) -> list[str]:
    """The tasks with a data file under ``<root>/data/sample/`` (paths relative to ``root``, the params
    file's folder), in the order given."""
    sample = (Path(root) / SAMPLE_DIR).resolve()
    return [name for name, files in task_files.items()
            if any((Path(root) / f).resolve().is_relative_to(sample) for f in files)]


def _sample_note(tasks: list[str]) -> list[str]:
    return [
        f"> **Bundled sample data** (task{'s' if len(tasks) > 1 else ''} {', '.join(tasks)}: files under "
        f"`{SAMPLE_DIR.as_posix()}/`). These few hundred invented tweets exist to run the pipeline end to end; "
        "the scores below say nothing about model quality, and a model pre-trained on the sample is not "
        "expected to beat the baseline. Evaluate on real data (see data/README.md).",
        "",
    ]


def render_markdown(summary: dict[str, Any], timing: dict[str, Any] | None = None, sample: list[str] | None = None) -> str:
    """``summary.md``: the task table, accuracy / macro-F1, baseline choices, runs (when any),
    pre-training, and (given ``timing``) wall times; first a note when tasks in ``sample`` ran on the
    bundled sample."""
    lines = ["# TWilBERT results", ""]
    lines += _sample_note(sample) if sample else []
    tasks = summary.get("tasks", {})
    lines += _task_tables(tasks) if tasks else ["No tasks."]
    lines += _runs_tables(tasks)
    lines += _pretraining_lines(summary.get("pretraining") or {}, timing)
    lines += _timing_lines(timing)
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------
# writing


def _strict(obj: Any) -> Any:
    """NaN/inf -> null and numpy scalars -> Python, so ``summary.json`` is strict JSON."""
    if isinstance(obj, dict):
        return {str(k): _strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_strict(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_summary(
    summary: dict[str, Any], out_dir: str | Path, timing: dict[str, Any] | None = None, sample: list[str] | None = None
) -> tuple[Path, Path]:
    """Write ``out_dir/summary.json`` and ``out_dir/summary.md`` (and ``out_dir/timing.json`` when
    ``timing`` is given: wall times stay out of summary.json, a DVC metric); returns the first two.
    ``sample``: the tasks that ran on the bundled sample (:func:`sample_tasks`), noted in summary.md."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    js, md = out / "summary.json", out / "summary.md"
    atomic_write_text(js, json.dumps(_strict(summary), indent=2, ensure_ascii=False, allow_nan=False) + "\n")
    atomic_write_text(md, render_markdown(summary, timing, sample))
    if timing is not None:
        atomic_write_text(out / TIMING_FILE, json.dumps(_strict(timing), indent=2, ensure_ascii=False, allow_nan=False) + "\n")
    return js, md


__all__ = [
    "ReportError",
    "aggregate_runs",
    "build_summary",
    "build_timing",
    "fmt",
    "load_task_report",
    "lookup",
    "mean_sd",
    "render_markdown",
    "sample_tasks",
    "scalar_block",
    "write_summary",
]
