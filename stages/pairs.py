"""Stage `pairs`: tokenise and build Reply Order Prediction examples as Arrow IPC shards."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from pipeline.common import PARAMS_OPTION, guarded, load, load_tokenizer, progress_enabled, require_normalized, run_guarded, tracked
from pipeline.outlock import lock_outputs
from pipeline.stage_params import stage_params
from twilbert.utils import atomic_write_text


def main(
    params: Path = PARAMS_OPTION,
    normalized_dir: Path = typer.Option(Path("data/normalized"), help="Output of the normalize stage."),
    vocab_model: Path = typer.Option(Path("models/vocab"), help="Output of the vocab stage (its directory, or the spm.model / tokenizer.json in it)."),
    out_dir: Path = typer.Option(Path("data/pairs"), help="Shards per split plus manifest.json."),
    stats_path: Path = typer.Option(Path("reports/pairs/stats.json"), help="Small counts summary (DVC metrics)."),
) -> None:
    """Build (tweet, reply, 1) positives and negatives (swap / random / both), split into
    train/valid/test by a hash of the original tweet id (all its replies in one split; `pairs.split_by`), truncate each segment to representation.max_len, and write uint16 Arrow shards."""
    p = load(params)
    lock_outputs(out_dir)
    from twilbert.data.pairs import build_pair_shards

    tok = load_tokenizer(vocab_model)
    pairs_pq, tweets_pq = require_normalized(normalized_dir)
    with guarded():
        stats_path.unlink(missing_ok=True)  # written last: a failed run leaves none, not the previous run's
    with tracked("pairs", params, p, stage_params("pairs"), fallback=Path("logs/tracking/pairs.jsonl")) as t:
        manifest = run_guarded(
            build_pair_shards,
            pairs_pq if pairs_pq.exists() else None,
            tweets_pq if tweets_pq.exists() else None,
            tok,
            p.pairs,
            p.representation.max_len,
            out_dir,
            progress=progress_enabled(p),
            num_threads=p.impl.tokenizer_threads,  # speed only: shards are identical for any value
        )
        summary = summarize_manifest(manifest)
        with guarded():
            stats_path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(stats_path, json.dumps(summary, indent=2) + "\n")
        t.log_metrics({k: v for k, v in _flat(summary).items() if isinstance(v, (int, float))})
    typer.echo(f"pairs: {json.dumps(summary.get('rows', summary))}")


def summarize_manifest(manifest: dict) -> dict:
    """The scalar parts of the manifest (counts), small enough for `dvc metrics show`."""
    keep = {}
    for k, v in manifest.items():
        if k in ("shards", "length_histogram", "config"):
            continue
        keep[k] = v
    return keep


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict):
            out.update(_flat(v, key))
        else:
            out[key] = v
    return out
