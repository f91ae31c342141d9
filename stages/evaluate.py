"""Stage `evaluate`: MLM / ROP / pseudo-log-likelihood evaluation of the pre-trained model."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from pipeline.common import PARAMS_OPTION, fail, guarded, load, load_tokenizer, run_guarded, tracked
from pipeline.committed import rounded
from pipeline.outlock import lock_outputs
from pipeline.stage_params import stage_params
from twilbert.utils import atomic_write_text

HELD_OUT = ("test", "valid")  # never "train": its rows would be reported as held-out metrics


def main(
    params: Path = PARAMS_OPTION,
    model_dir: Path = typer.Option(Path("models/pretrain/final"), help="Pre-trained model (safetensors + config.json)."),
    shards_dir: Path = typer.Option(Path("data/pairs"), help="Output of the pairs stage."),
    vocab_model: Path = typer.Option(Path("models/vocab"), help="Output of the vocab stage (its directory, or the spm.model / tokenizer.json in it)."),
    split: str = typer.Option("test", help="Held-out split to evaluate: test or valid."),
    out_dir: Path = typer.Option(Path("reports/evaluate"), help="metrics.json (DVC metrics) and report.md."),
) -> None:
    """Evaluate the pre-trained model on held-out pairs: MLM accuracy and perplexity on masked tokens
    (beside the unigram-frequency guesser on the same tokens: baseline_unigram_accuracy), ROP accuracy
    and F1, and pseudo-log-likelihood; writes a human-readable report of a few examples."""
    if split not in HELD_OUT:
        fail(f"--split: expected test or valid (a held-out split), got {split!r}")
    p = load(params)
    lock_outputs(out_dir)
    import torch

    from twilbert.data.shard_format import verify_manifest
    from twilbert.model.twilbert import TWilBERT
    from twilbert.train.checkpoint import load_checkpoint, read_model_config
    from twilbert.config import ConfigError
    from twilbert.train.evaluate import evaluate_pretrained
    from twilbert.train.runtime import resolve_device

    if not (model_dir / "config.json").is_file():
        fail(f"{model_dir}: no pre-trained model (run the pretrain stage first)")
    # the shards it reads (train: unigram baseline), checked against their manifest before the model loads
    run_guarded(verify_manifest, shards_dir, splits=("train", split))
    tok = load_tokenizer(vocab_model)
    _, cfg = run_guarded(read_model_config, model_dir)
    model = TWilBERT(cfg, attention=p.impl.attention)
    run_guarded(load_checkpoint, model_dir, model)
    device = run_guarded(resolve_device, p.impl.device, error=ConfigError)
    # Inputs are usable: the previous run's outputs go now, and the new ones are written last, so a
    # failed run leaves none rather than the previous run's beside nothing.
    with guarded():
        for name in ("metrics.json", "report.md"):
            (out_dir / name).unlink(missing_ok=True)
    if p.impl.num_threads:
        torch.set_num_threads(p.impl.num_threads)
    with tracked("evaluate", params, p, stage_params("evaluate"), fallback=Path("logs/tracking/evaluate.jsonl")) as t:
        result = run_guarded(
            evaluate_pretrained, model.to(device), shards_dir, split, tok,
            batch_size=p.evaluate.batch_size, seed=p.evaluate.seed,
            pll_sentences=p.evaluate.pll_sentences, report_examples=p.evaluate.report_examples, device=device,
        )
        with guarded():
            out_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(out_dir / "report.md", result.report_md)
            atomic_write_text(out_dir / "metrics.json", json.dumps(rounded(result.metrics), indent=2) + "\n")  # no float noise in git
        t.log_metrics({k: v for k, v in result.metrics.items() if isinstance(v, (int, float))})
        t.log_artifact(out_dir / "report.md")
    typer.echo(f"evaluate: {json.dumps(result.metrics)}")
