"""Repeated fine-tuning runs with different seeds (``finetuning.seeds``).

``finetune_runs`` is what the finetune stage calls. Without ``seeds`` it is one
:func:`~twilbert.finetune.train.finetune_task` run with ``finetuning.seed`` (its reports are also
copied to ``report_out/runs/seed-<seed>/``, so that ``runs/`` always exists and dvc.yaml can declare
it whatever the params). With ``seeds: [s1, s2, ...]``
it trains one model per seed on the same data with the same config, and writes:

* ``report_out/runs/seed-<s>/``: each run's full report set (metrics.json, class_report, confusion,
  predictions, history, run_info.json);
* ``report_out/metrics.json``: ``dev`` / ``test`` = the **mean** over seeds of every scalar metric,
  ``dev_sd`` / ``test_sd`` = the sample standard deviation (ddof 1; null for one seed), ``runs`` =
  every seed's own values (``runs.seed-<s>.dev.<metric>``: a dict, so ``dvc metrics show`` and
  ``dvc exp show`` flatten it into columns), ``chosen_seed``;
* ``model_out`` and the top-level class_report / confusion / predictions / history: those of the run
  with the best **dev** selection score (ties: the first seed listed). Test never takes part in the
  choice; it is reported for every seed and averaged.

Crash safety across seeds: each seed checkpoints under ``<checkpoint_dir>/seed-<s>/`` and keeps its
last checkpoint (and model) until every seed is done, so a rerun after a kill redoes no finished seed
(a finished seed resumes at its last epoch: test evaluation and outputs only). The per-seed
directories are removed at the end; ``checkpoint_dir`` itself stays (not a DVC output: DVC leaves it alone).

MLflow (``log_fn``): each seed's per-epoch metrics are logged with a ``seed-<s>/`` prefix
(``seed-1/dev.f1_macro`` at step = epoch), in the stage's one run.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from twilbert.finetune.config import FinetuningConfig, TaskConfig, effective_finetuning
from twilbert.finetune.epochs import LogFn
from twilbert.finetune.metrics import mean_sd, selection_metric
from twilbert.finetune.reports import REPORT_FILES, RUN_INFO_FILE, write_json
from twilbert.finetune.train import default_checkpoint_dir, finetune_task

RUNS_DIR = "runs"
_COPIED = tuple(f for f in REPORT_FILES if f != "metrics.json")  # the chosen run's own reports


def _copy_reports(src: Path, dst: Path, names: tuple[str, ...]) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for f in names:
        if (src / f).is_file():
            shutil.copyfile(src / f, dst / f)


def _prefixed(log_fn: LogFn | None, prefix: str) -> LogFn | None:
    if log_fn is None:
        return None
    return lambda metrics, step: log_fn({f"{prefix}/{k}": v for k, v in metrics.items()}, step)


def _with_selection(block: dict[str, Any], selection: str, value: float | None) -> dict[str, Any]:
    """A run's scalar metrics plus the selection metric when it is a per-class value (class_metric)."""
    return block if selection in block else {**block, selection: value}


def choose_run(runs: dict[str, dict[str, Any]]) -> str:
    """The label of the run with the best dev selection score (strictly greater wins, so ties keep the
    first listed; a missing or NaN score never wins over a real one). Test is not looked at."""
    best, best_score = None, float("-inf")
    for label, r in runs.items():
        s = r.get("dev_selection")
        s = float("-inf") if s is None or s != s else float(s)
        if best is None or s > best_score:
            best, best_score = label, s
    assert best is not None, "choose_run needs at least one run"
    return best


def aggregate(runs: dict[str, dict[str, Any]], selection: str, split: str) -> tuple[dict[str, float | None], dict[str, float | None]]:
    """Mean and sample sd over runs of every scalar metric of ``split`` (a metric some run lacks: null)."""
    keys = list(dict.fromkeys(k for r in runs.values() for k in r[split]))
    stats = {k: mean_sd([r[split].get(k) for r in runs.values()]) for k in keys}
    return {k: m for k, (m, _) in stats.items()}, {k: s for k, (_, s) in stats.items()}


def finetune_runs(
    name: str,
    task: TaskConfig,
    finetuning: FinetuningConfig,
    *,
    model_out: str | Path,
    report_out: str | Path,
    checkpoint_dir: str | Path | None = None,
    log_fn: LogFn | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """One run per seed of ``finetuning.seeds`` (or one run with ``finetuning.seed``); see the module
    docstring for the outputs. ``kwargs`` go to :func:`finetune_task` (tokenizer_path, rules, ...).
    Returns what was written to ``metrics.json`` (plus ``run_info``)."""
    ft = effective_finetuning(finetuning, task, name)
    model_out, report_out = Path(model_out), Path(report_out)
    if ft.seeds is None:
        result = finetune_task(name, task, finetuning, model_out=model_out, report_out=report_out, checkpoint_dir=checkpoint_dir,
                               log_fn=log_fn, **kwargs)
        _copy_reports(report_out, report_out / RUNS_DIR / f"seed-{result['seed']}", (*REPORT_FILES, RUN_INFO_FILE))
        return result
    root = Path(checkpoint_dir) if checkpoint_dir is not None else default_checkpoint_dir(model_out)
    selection = selection_metric(task)
    results: dict[str, dict[str, Any]] = {}
    for seed in ft.seeds:
        label = f"seed-{seed}"
        results[label] = finetune_task(
            name, task, finetuning, model_out=root / label / "model", report_out=report_out / RUNS_DIR / label,
            checkpoint_dir=root / label / "checkpoints", clear_checkpoints=False, seed=seed, log_fn=_prefixed(log_fn, label), **kwargs,
        )
    chosen = choose_run(results)

    # the chosen run's model and reports become the task's
    if model_out.exists():
        shutil.rmtree(model_out)
    shutil.copytree(root / chosen / "model", model_out)
    _copy_reports(report_out / RUNS_DIR / chosen, report_out, _COPIED)

    runs = {}
    for label, r in results.items():
        runs[label] = {
            "seed": r["seed"],
            "best_epoch": r["best_epoch"],
            "epochs_run": r["epochs_run"],
            "skipped_updates": r["skipped_updates"],
            "dev": _with_selection(r["dev"], selection, r["dev_selection"]),
            "test": _with_selection(r["test"], selection, r["test_selection"]),
        }
    dev, dev_sd = aggregate(runs, selection, "dev")
    test, test_sd = aggregate(runs, selection, "test")
    first = results[chosen]
    summary = {
        "task": name,
        "task_type": first["task_type"],
        "selection_metric": selection,
        "seeds": list(ft.seeds),
        "n_runs": len(runs),
        "chosen_seed": first["seed"],
        "chosen_by": f"best dev {selection} over the seeds (test never used)",
        "train_examples": first["train_examples"],
        "device": first["device"],
        "data": first.get("data"),  # rows in / used / quarantined per split: the same for every seed
        "dev": dev,
        "test": test,
        "dev_sd": dev_sd,
        "test_sd": test_sd,
        "runs": runs,
    }
    write_json(report_out / "metrics.json", summary)
    run_info = {
        "train_seconds": round(sum(r["run_info"]["train_seconds"] for r in results.values()), 3),
        "total_seconds": round(sum(r["run_info"]["total_seconds"] for r in results.values()), 3),
        "runs": {label: r["run_info"] for label, r in results.items()},
    }
    write_json(report_out / RUN_INFO_FILE, run_info)
    for label in results:  # every seed is done: their checkpoints and models are no longer needed
        shutil.rmtree(root / label, ignore_errors=True)
    for stale in root.glob("seed-*"):  # moved-aside checkpoints of older configurations
        shutil.rmtree(stale, ignore_errors=True)
    return {**summary, "run_info": run_info}


def final_metrics(result: dict[str, Any]) -> dict[str, float]:
    """The numbers of a finished task for a tracker: top-level scalars, ``best_dev.*`` (the selected
    epoch's dev metrics; ``dev.*`` is the per-epoch series, step = epoch, so the final block gets its
    own name), ``test.*`` (means for several seeds, with ``best_dev_sd.*`` / ``test_sd.*``) and
    ``run_info.*`` wall times."""
    def number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    out = {k: float(v) for k, v in result.items() if number(v)}
    names = {"dev": "best_dev", "dev_sd": "best_dev_sd", "test": "test", "test_sd": "test_sd", "run_info": "run_info"}
    for block, name in names.items():
        out.update({f"{name}.{k}": float(v) for k, v in (result.get(block) or {}).items() if number(v)})
    return out


__all__ = ["RUNS_DIR", "aggregate", "choose_run", "final_metrics", "finetune_runs"]
