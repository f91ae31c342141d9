"""Stage `pretrain`: MLM + Reply Order Prediction pre-training over the Arrow pair shards.

Under torchrun every rank runs this command; only rank 0 tracks (one MLflow run per stage, not one per
rank) and writes the reports. The other ranks get a disabled tracker (:func:`tracking_params`).
"""

from __future__ import annotations

import csv
import json
import os
import sys
from pathlib import Path

import typer

from pipeline.common import PARAMS_OPTION, guarded, load, load_tokenizer, progress_enabled, run_guarded, tracked
from pipeline.committed import record_timing, rounded, split_timing
from pipeline.outlock import lock_outputs
from pipeline.stage_params import stage_params
from twilbert.utils import atomic_write_text

CURVE_FIELDS = ("step", "epoch", "loss", "mlm_loss", "rop_loss", "mlm_accuracy", "rop_accuracy", "lr")  # tokens/s: MLflow only (it varies run to run)


def process_rank() -> int:
    """This process's global rank under torchrun (``RANK``), 0 otherwise."""
    return int(os.environ.get("RANK", "0"))


def tracking_params(params, rank: int):
    """``params`` for :func:`pipeline.common.tracked`: as given on rank 0; tracking disabled on the
    other ranks, so they open no MLflow run and write no fallback file."""
    if rank == 0:
        return params
    from dataclasses import replace

    return replace(params, tracking=replace(params.tracking, enabled=False))


class CurveWriter:
    """Training curves for `dvc plots` (CSV, one row per logging interval), written as they come."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._f = open(path, "w", newline="", encoding="utf-8")
        self._w = csv.DictWriter(self._f, fieldnames=CURVE_FIELDS, extrasaction="ignore")
        self._w.writeheader()

    def __call__(self, metrics: dict, step: int) -> None:
        self._w.writerow({"step": step, **{k: (round(v, 6) if isinstance(v, float) else v) for k, v in metrics.items()}})
        self._f.flush()

    def close(self) -> None:
        self._f.close()


def main(
    params: Path = PARAMS_OPTION,
    shards_dir: Path = typer.Option(Path("data/pairs"), help="Output of the pairs stage."),
    vocab_model: Path = typer.Option(Path("models/vocab"), help="Output of the vocab stage (its directory, or the spm.model / tokenizer.json in it)."),
    out_dir: Path = typer.Option(Path("models/pretrain"), help="Checkpoints, final weights and summary."),
    reports_dir: Path = typer.Option(Path("reports/pretrain"), help="metrics.json (DVC metrics) and curves.csv (DVC plots)."),
    max_steps: int = typer.Option(0, help="Override training.max_steps (0 = use params); for quick trials."),
) -> None:
    """Pre-train TWilBERT (masked LM + Reply Order Prediction) with length-bucketed batches, gradient
    accumulation, bf16 autocast where supported, optional torch.compile, checkpoints every epoch, every
    run.checkpoint_every steps and at the end of the budget, and exact resumption after an
    interruption (kill -9 included). Checkpoints are kept per run config, so a params change trains
    afresh without destroying the previous config's checkpoints (run.on_config_change=error refuses
    instead; run.resume_from names a checkpoint). With impl.n_gpus > 1 the command relaunches
    itself under torchrun (DDP); under torchrun it joins the process group and only rank 0 tracks."""
    p = load(params)
    lock_outputs(out_dir)
    from twilbert.train.distributed import torchrun_command

    if p.impl.n_gpus > 1 and "LOCAL_RANK" not in os.environ:
        main_spec = getattr(sys.modules["__main__"], "__spec__", None)
        # `python -m pipeline.cli pretrain` (as dvc.yaml runs it) relaunches as `-m pipeline.cli`, so the
        # ranks import the same code; the `twilbert` console script relaunches itself by path.
        entry = ["-m", main_spec.name] if main_spec is not None and main_spec.name else [sys.argv[0]]
        cmd = torchrun_command(p.impl.n_gpus, [*entry, *sys.argv[1:]])
        typer.echo("pretrain: launching " + " ".join(cmd), err=True)
        os.execvp(cmd[0], cmd)
    from dataclasses import replace

    from twilbert.config import to_dict
    from twilbert.data.shard_format import verify_manifest
    from twilbert.train.pretrain import pretrain

    tok = load_tokenizer(vocab_model)
    run_guarded(verify_manifest, shards_dir, splits=("train",))  # an altered shard is named, not trained on
    model_cfg = p.model.resolved(vocab_size=tok.vocab_size, max_len=p.representation.max_len)
    training = replace(p.training, max_steps=max_steps) if max_steps else p.training
    rank = process_rank()
    rank0 = rank == 0
    if rank0:  # the previous run's metrics go first: a failed run leaves none, not a stale one
        with guarded():
            (reports_dir / "metrics.json").unlink(missing_ok=True)
    curves = CurveWriter(reports_dir / "curves.csv") if rank0 else None
    fallback = Path("logs/tracking/pretrain.jsonl") if rank0 else None
    with tracked("pretrain", params, tracking_params(p, rank), stage_params("pretrain"), fallback=fallback) as t:

        def log_fn(metrics: dict, step: int) -> None:
            if rank0:
                t.log_metrics(metrics, step)
                curves(metrics, step)

        summary = run_guarded(
            pretrain,
            model_cfg=model_cfg,
            training=training,
            impl=p.impl,
            run=p.run,
            shards_dir=shards_dir,
            tokenizer_path=vocab_model,
            out_dir=out_dir,
            log_fn=log_fn,
            progress=progress_enabled(p),
            normalize=to_dict(p.normalize.rules.effective()),  # for embed / twilbert.load of final/
        )
        if rank0:
            curves.close()
            final = {k: v for k, v in summary.items() if isinstance(v, (int, float, str, bool))}
            committed, timing = split_timing(final)  # wall time, tokens/s: MLflow and logs/timing.json only
            with guarded():
                atomic_write_text(reports_dir / "metrics.json", json.dumps(rounded(committed), indent=2) + "\n")
            record_timing({"pretrain": timing})
            t.log_metrics({f"final.{k}": v for k, v in final.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
            t.log_params({"model.resolved": json.dumps(to_dict(model_cfg))})
    if rank0:
        typer.echo(f"pretrain: {json.dumps({k: v for k, v in summary.items() if isinstance(v, (int, float))})}")
