"""Stage `finetune`: fine-tune one task (dvc.yaml runs one stage per entry of `tasks` in params.yaml)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from pipeline.common import PARAMS_OPTION, fail, load, progress_enabled, run_guarded, tracked
from pipeline.outlock import lock_outputs
from pipeline.stage_params import stage_params

REPORT_ARTIFACTS = ("metrics.json", "class_report.md", "class_report.json", "confusion.png", "confusion.csv", "predictions.tsv",
                    "history.csv", "run_info.json", "rejects.tsv")


def main(
    task: str = typer.Option(..., "--task", "-t", help="Task name: a key of `tasks` in params.yaml."),
    params: Path = PARAMS_OPTION,
    pretrained_dir: Path = typer.Option(Path("models/pretrain/final"), help="Pre-trained encoder (ignored when finetuning.path_load_weights is set)."),
    vocab_model: Path = typer.Option(Path("models/vocab"), help="Output of the vocab stage (its directory, or the spm.model / tokenizer.json in it)."),
    model_out: Path = typer.Option(None, help="Default: models/finetune/<task>."),
    report_out: Path = typer.Option(None, help="Default: reports/finetune/<task>."),
    checkpoint_dir: Path = typer.Option(None, help="Per-epoch checkpoints, to resume a killed run. Default: models/finetune/.checkpoints/<task>."),
) -> None:
    """Fine-tune a classifier for one task (single text or text pair): evaluate dev every epoch, keep the
    best by the task's metric, evaluate test with the best-dev model, and save a self-contained model
    (weights, config, label map, tokenizer and normalisation settings) plus reports (metrics, per-class
    report, confusion matrix, predictions). With finetuning.seeds, one run per seed: metrics.json holds
    mean and sd over seeds, and the best-dev seed's model is saved. A killed run resumes from its last
    per-epoch checkpoint."""
    p = load(params)
    if task not in p.tasks:
        fail(f"{params}: tasks.{task}: no such task (known: {', '.join(sorted(p.tasks)) or 'none'})")
    from twilbert.finetune.config import effective_finetuning
    from twilbert.finetune.runs import final_metrics, finetune_runs

    model_out = model_out or Path("models/finetune") / task
    report_out = report_out or Path("reports/finetune") / task
    lock_outputs(model_out, report_out)
    ft = run_guarded(effective_finetuning, p.finetuning, p.tasks[task], task)
    model_cfg = None
    if ft.path_load_weights == "random":
        from twilbert.text.tokenizer import Tokenizer

        model_cfg = p.model.resolved(vocab_size=run_guarded(Tokenizer.from_file, vocab_model).vocab_size, max_len=p.representation.max_len)
    with tracked(f"finetune:{task}", params, p, stage_params("finetune", task=task), fallback=Path(f"logs/tracking/finetune-{task}.jsonl")) as t:
        result = run_guarded(
            finetune_runs,
            task,
            p.tasks[task],
            p.finetuning,
            tokenizer_path=vocab_model,
            rules=p.normalize.rules.effective(),
            model_out=model_out,
            report_out=report_out,
            checkpoint_dir=checkpoint_dir,
            pretrained_dir=pretrained_dir,
            model_config=model_cfg,
            impl=p.impl,
            run=p.run,
            data_root=params.parent,
            log_fn=t.log_metrics,
            progress=progress_enabled(p),
        )
        t.log_metrics(final_metrics(result))
        for name in REPORT_ARTIFACTS:
            t.log_artifact(report_out / name, "report")
        if "runs" in result:  # several seeds: every seed's reports
            t.log_artifact(report_out / "runs", "report/runs")
        t.log_artifact(model_out / "config.json", "model")
        from pipeline.pyfunc import log_finetuned_model, serve_command

        model_uri = log_finetuned_model(t, model_out)  # servable: make serve RUN=<run id>
    shown = {k: v for k, v in result.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    shown.update({f"test.{result['selection_metric']}": result["test"].get(result["selection_metric"])})
    typer.echo(f"finetune {task}: " + json.dumps(shown))
    if model_uri:
        typer.echo(f"finetune {task}: MLflow model {model_uri} (serve: {serve_command(model_uri)})")
