"""A grid of DVC experiments, summarised: one row per configuration, mean ± sd over its seeds.

Hyper-parameter search is DVC's own (``dvc exp run --queue -S 'finetuning.lr=1e-5,5e-5' ...``, then
``dvc queue start``); this module only reads what the experiments produced, from
``dvc exp show --json``, and answers the question a grid asks: which configuration is best on dev, and
what does it score on test.

* **Configurations.** The params that differ between the experiments (``params.yaml`` only) define a
  configuration, except the seed keys (``finetuning.seed``, ``finetuning.seeds``, ``training.seed``):
  experiments that differ only in a seed are repeats of one configuration.
* **Runs.** Each experiment contributes one run per seed: with ``finetuning.seeds`` the finetune
  stage's ``metrics.json`` holds every seed's values under ``runs.seed-<s>``; otherwise the experiment
  is one run.
* **Selection.** The selection metric is the task's own (``selection_metric`` in its metrics.json:
  ``f1_macro``, ``stance_f1``, ...) unless given. The best configuration has the highest **dev** mean
  over its seeds; the original's grid search took the single best (params, run) on dev and printed
  that run's test score (docs/deviations.md#finetune-seeds). Test never takes part in the choice.
* Experiments whose metrics are missing (failed, still queued) are listed apart, never averaged.

Pure functions over the parsed JSON; :func:`load_exp_show` runs the DVC command.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twilbert.metadata import parse_json

SEED_KEYS = ("finetuning.seed", "finetuning.seeds", "training.seed", "evaluate.seed", "pairs.seed", "vocab.seed")
PARAMS_FILE = "params.yaml"


@dataclass(frozen=True)
class Experiment:
    name: str  # the experiment's name, or the branch / commit of a baseline row
    rev: str
    params: dict[str, Any]  # params.yaml, flattened (dotted keys)
    metrics: dict[str, dict[str, Any]]  # metrics file -> its parsed content (None on error)
    error: str | None = None


@dataclass
class ConfigSummary:
    config: dict[str, Any]  # the varied params (seeds excluded)
    experiments: list[str] = field(default_factory=list)
    dev: list[float] = field(default_factory=list)  # selection metric, one value per run (seed)
    test: list[float] = field(default_factory=list)
    seeds: list[str] = field(default_factory=list)


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists stay values."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for k, v in tree.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        out.update(flatten(v, key) if isinstance(v, dict) else {key: v})
    return out


def _row(entry: dict[str, Any], name: str | None) -> Experiment:
    data = entry.get("data") or {}
    params = ((data.get("params") or {}).get(PARAMS_FILE) or {}).get("data") or {}
    metrics = {path: m.get("data") for path, m in (data.get("metrics") or {}).items()}
    error = entry.get("error")
    if isinstance(error, dict):
        error = error.get("msg") or error.get("type") or "failed"
    return Experiment(name=name or entry.get("name") or entry.get("rev", "?")[:7], rev=entry.get("rev", ""),
                      params=flatten(params), metrics=metrics, error=error)


def parse_exp_show(rows: list[dict[str, Any]], *, include_baseline: bool = False) -> list[Experiment]:
    """``dvc exp show --json`` -> experiments (the ``workspace`` row is skipped: it duplicates the
    last experiment applied to the workspace). Baseline commits are left out unless
    ``include_baseline``: a grid is the experiments queued from a commit, and a commit's metrics are
    only as fresh as its last ``dvc repro``."""
    out: list[Experiment] = []
    for commit in rows:
        if commit.get("rev") == "workspace":
            continue
        if include_baseline and commit.get("data"):
            base = _row(commit, commit.get("name"))
            if any(isinstance(m, dict) for m in base.metrics.values()):  # a commit without metrics is no grid point
                out.append(base)
        for exp in commit.get("experiments") or []:
            revs = exp.get("revs") or []
            if not revs:
                continue
            head = revs[0]  # the experiment's latest commit
            row = _row(head, exp.get("name") or head.get("name"))
            if exp.get("executor") and (exp["executor"].get("state") == "failed") and row.error is None:
                row = Experiment(row.name, row.rev, row.params, row.metrics, "failed")
            out.append(row)
    return out


def load_exp_show(repo: str | Path = ".", extra_args: Iterable[str] = ()) -> list[dict[str, Any]]:
    """Run ``dvc exp show --json`` in ``repo`` with this interpreter's DVC (``python -m dvc``), so
    ``.venv/bin/twilbert compare`` works without an activated venv (a bare ``dvc`` needed it on PATH)."""
    cmd = [sys.executable, "-m", "dvc", "exp", "show", "--json", *extra_args]
    proc = subprocess.run(cmd, cwd=repo, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"dvc exp show failed: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else proc.returncode}")
    return parse_json(proc.stdout, "dvc exp show --json output", kind=list, allow_nan=True)


def varied_params(experiments: list[Experiment]) -> list[str]:
    """Recipe params whose values differ between experiments, seeds excluded, in a stable order (speed
    and bookkeeping sections never make two experiments different configurations)."""
    from pipeline.stage_params import NON_RECIPE_SECTIONS

    keys = sorted({k for e in experiments for k in e.params if k.split(".", 1)[0] not in NON_RECIPE_SECTIONS})
    return [k for k in keys if k not in SEED_KEYS and len({json.dumps(e.params.get(k), sort_keys=True) for e in experiments}) > 1]


def task_metrics_path(task: str) -> str:
    return f"reports/finetune/{task}/metrics.json"


def _runs_of(metrics: dict[str, Any], metric: str) -> list[tuple[str, float, float]]:
    """(seed label, dev, test) per run in one experiment's task metrics.json."""
    runs = metrics.get("runs")
    if isinstance(runs, dict) and runs:
        out = []
        for label, r in sorted(runs.items()):
            dev, test = (r.get("dev") or {}).get(metric), (r.get("test") or {}).get(metric)
            if isinstance(dev, (int, float)) and isinstance(test, (int, float)):
                out.append((label, float(dev), float(test)))
        if out:
            return out
    dev, test = (metrics.get("dev") or {}).get(metric), (metrics.get("test") or {}).get(metric)
    if isinstance(dev, (int, float)) and isinstance(test, (int, float)):
        return [(str(metrics.get("chosen_seed", "")), float(dev), float(test))]
    return []


def summarise(experiments: list[Experiment], task: str, metric: str | None = None) -> dict[str, Any]:
    """One task's grid: a summary per configuration, the dev-best one, and the experiments that had
    no usable metrics (with their errors)."""
    path = task_metrics_path(task)
    usable = [e for e in experiments if e.error is None and isinstance(e.metrics.get(path), dict)]
    keys = varied_params(experiments)  # over every experiment, failed ones too: the grid as queued
    broken = [{"experiment": e.name, "config": {k: e.params.get(k) for k in keys}, "error": e.error or f"no {path}"}
              for e in experiments if e not in usable]
    if metric is None:
        names = {e.metrics[path].get("selection_metric") for e in usable} - {None}
        if len(names) > 1:
            raise ValueError(f"{task}: experiments select on different metrics {sorted(names)}: give --metric")
        metric = next(iter(names), "f1_macro")
    groups: dict[str, ConfigSummary] = {}
    for e in usable:
        config = {k: e.params.get(k) for k in keys}
        g = groups.setdefault(json.dumps(config, sort_keys=True), ConfigSummary(config=config))
        g.experiments.append(e.name)
        for seed, dev, test in _runs_of(e.metrics[path], metric):
            g.dev.append(dev)
            g.test.append(test)
            g.seeds.append(f"{e.params.get('finetuning.seed')}" if not seed else seed)
    rows = []
    for g in groups.values():
        if not g.dev:
            broken += [{"experiment": n, "config": g.config, "error": f"no {metric} in {path}"} for n in g.experiments]
            continue
        dm, ds = mean_sd(g.dev)
        tm, ts = mean_sd(g.test)
        rows.append({"config": g.config, "experiments": g.experiments, "runs": len(g.dev), "seeds": g.seeds,
                     "dev_mean": dm, "dev_sd": ds, "test_mean": tm, "test_sd": ts, "dev": g.dev, "test": g.test})
    rows.sort(key=lambda r: -r["dev_mean"])
    best = rows[0] if rows else None
    return {"task": task, "metric": metric, "varied": keys, "configs": rows, "best": best, "failed": broken}


def mean_sd(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (ddof 1; None for a single value)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


def _pm(mean: float, sd: float | None) -> str:
    return f"{mean:.4f}" if sd is None else f"{mean:.4f} ± {sd:.4f}"


def to_markdown(summary: dict[str, Any]) -> str:
    """The grid as a table a person reads: every configuration, best dev first, the winner marked."""
    keys = summary["varied"]
    m = summary["metric"]
    lines = [f"### {summary['task']}: {m} (mean ± sd over runs; best configuration by dev, never test)", ""]
    head = [*keys, "runs", f"dev {m}", f"test {m}", ""] if keys else ["runs", f"dev {m}", f"test {m}", ""]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in summary["configs"]:
        mark = "**best on dev**" if r is summary["best"] else ""
        cells = [json.dumps(r["config"][k]) if isinstance(r["config"][k], (list, dict)) else str(r["config"][k]) for k in keys]
        cells += [str(r["runs"]), _pm(r["dev_mean"], r["dev_sd"]), _pm(r["test_mean"], r["test_sd"]), mark]
        lines.append("| " + " | ".join(cells) + " |")
    if summary["best"] is not None:
        b = summary["best"]
        conf = ", ".join(f"{k}={b['config'][k]}" for k in keys) or "(one configuration)"
        lines += ["", f"Best on dev: {conf} (experiments: {', '.join(b['experiments'])}); "
                      f"its test {m}: {_pm(b['test_mean'], b['test_sd'])}."]
    if summary["failed"]:
        lines += ["", "Not included (no metrics):"]
        for f in summary["failed"]:
            conf = ", ".join(f"{k}={v}" for k, v in f["config"].items())
            lines.append(f"- {f['experiment']}" + (f" ({conf})" if conf else "") + f": {f['error']}")
    return "\n".join(lines) + "\n"


__all__ = ["Experiment", "flatten", "load_exp_show", "mean_sd", "parse_exp_show", "summarise", "to_markdown", "varied_params"]
