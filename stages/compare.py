"""Command `compare`: a grid of DVC experiments as a table, mean ± sd per configuration (not a DVC stage).

Run the grid with DVC, then summarise it::

    dvc exp run --queue -S 'finetuning.lr=1e-5,5e-5,1e-4' -S 'finetuning.batch_size=16,32'
    dvc queue start -j 1
    twilbert compare --task sentiment

Configurations, seeds and the dev-only choice of the best: ``pipeline/experiments.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from pipeline.common import fail


def main(
    task: list[str] = typer.Option(None, "--task", "-t", help="Task(s) to summarise (default: every task with metrics)."),
    metric: str = typer.Option(None, help="Metric to select and report on (default: each task's own selection metric)."),
    exp_json: Path = typer.Option(None, "--exp-json", help="Read this saved `dvc exp show --json` output instead of running it."),
    rev: str = typer.Option(None, help="Baseline commit whose experiments to compare (dvc exp show --rev; default HEAD)."),
    include_baseline: bool = typer.Option(False, help="Count the baseline commit's committed metrics as a grid point."),
    out: Path = typer.Option(None, "--out", "-o", help="Also write <out>.md and <out>.json."),
) -> None:
    """Summarise a grid of DVC experiments: one row per configuration (the params that differ, seeds
    excluded), mean ± sd of dev and test over its seeds, the best configuration chosen on dev only,
    and the experiments that failed."""
    from pipeline.experiments import load_exp_show, parse_exp_show, summarise, to_markdown
    from twilbert.metadata import MetadataError, read_json

    try:
        rows = read_json(exp_json, kind=list, allow_nan=True) if exp_json else load_exp_show(".", ["--rev", rev] if rev else [])
    except (MetadataError, RuntimeError) as exc:
        fail(f"compare: cannot read the experiments: {exc}")
    experiments = parse_exp_show(rows, include_baseline=include_baseline)
    if not experiments:
        fail("compare: no experiments found (queue some with `dvc exp run --queue -S ...`, then `dvc queue start`)")
    tasks = task or sorted({p.split("/")[2] for e in experiments for p in e.metrics if p.startswith("reports/finetune/") and p.endswith("/metrics.json")})
    if not tasks:
        fail("compare: the experiments have no reports/finetune/<task>/metrics.json")
    summaries = []
    for name in tasks:
        try:
            summaries.append(summarise(experiments, name, metric))
        except ValueError as exc:
            fail(str(exc))
    text = "\n".join(to_markdown(s) for s in summaries)
    typer.echo(text)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".md").write_text(text, encoding="utf-8")
        out.with_suffix(".json").write_text(json.dumps({"tasks": summaries}, indent=2, default=str) + "\n", encoding="utf-8")
