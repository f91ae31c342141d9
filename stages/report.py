"""Stage `report`: every task's model beside a classical baseline, plus the pre-training summary."""

from __future__ import annotations

from pathlib import Path

import typer

from pipeline.common import PARAMS_OPTION, StageError, load, run_guarded, tracked
from pipeline.committed import read_timing, record_timing
from pipeline.outlock import lock_outputs
from pipeline.stage_params import stage_params


def _read_json(path: Path) -> dict | None:
    from twilbert.metadata import read_json

    return run_guarded(read_json, path, error=StageError) if path.is_file() else None


def main(
    params: Path = PARAMS_OPTION,
    finetune_reports: Path = typer.Option(Path("reports/finetune"), help="Per-task reports of the finetune stages."),
    pretrain_metrics: Path = typer.Option(Path("reports/pretrain/metrics.json"), help="Final pre-training metrics."),
    evaluate_metrics: Path = typer.Option(Path("reports/evaluate/metrics.json"), help="Evaluate-stage metrics."),
    out_dir: Path = typer.Option(Path("reports"), help="Where summary.json and summary.md go (run times: logs/timing.json)."),
) -> None:
    """Train a TF-IDF (word + char n-grams) + logistic-regression baseline per task, tuned on dev only
    (C, and raw or normalised text), and write reports/summary.json and reports/summary.md: every task, the fine-tuned model against the
    baseline on the same metrics (mean ± sd over seeds where finetuning.seeds is set), and the
    pre-training results. Run times go to MLflow and logs/timing.json, not to the committed summary."""
    p = load(params)
    lock_outputs(out_dir)
    from twilbert.finetune.baseline import run_baseline
    from twilbert.finetune.reports import RUN_INFO_FILE
    from twilbert.report import build_summary, build_timing, load_task_report, sample_tasks, write_summary

    rules = p.normalize.rules.effective()
    task_reports, baselines, run_info = {}, {}, {}
    with tracked("report", params, p, stage_params("report"), fallback=Path("logs/tracking/report.jsonl")) as t:
        for name, task in p.tasks.items():
            task_reports[name] = run_guarded(load_task_report, finetune_reports / name)
            run_info[name] = _read_json(finetune_reports / name / RUN_INFO_FILE)
            baselines[name] = run_guarded(run_baseline, task, name=name, rules=rules, data_root=params.parent, seed=p.finetuning.seed)
        pretraining = _read_json(pretrain_metrics)
        summary = build_summary(task_reports, baselines, pretraining, _read_json(evaluate_metrics))
        # Run times change on every run: logs/timing.json (untracked) and MLflow, not the committed summary.
        timing = build_timing(run_info, {**(pretraining or {}), **(read_timing().get("pretrain") or {})}, task_reports)
        sample = sample_tasks({n: [k.train_file, k.dev_file, k.test_file] for n, k in p.tasks.items()}, params.parent)
        write_summary(summary, out_dir, sample=sample)
        record_timing(timing)
        for name, entry in summary["tasks"].items():
            for split in ("test", "baseline"):
                block = entry.get(split) or {}
                block = block.get("test", block) if split == "baseline" else block
                t.log_metrics({f"{name}.{split}.{k}": v for k, v in block.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
        for name in ("summary.md", "summary.json"):
            t.log_artifact(out_dir / name)
        t.log_metrics({f"timing.{name}.{k}": v for name, entry in timing["tasks"].items() for k, v in (entry or {}).items()
                       if isinstance(v, (int, float)) and not isinstance(v, bool)})
    typer.echo((out_dir / "summary.md").read_text(encoding="utf-8"))
