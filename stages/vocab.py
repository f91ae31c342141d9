"""Stage `vocab`: train the SentencePiece vocabulary on the normalised text."""

from __future__ import annotations

from pathlib import Path

import typer

from pipeline.common import PARAMS_OPTION, load, run_guarded, tracked


def main(
    params: Path = PARAMS_OPTION,
    normalized_dir: Path = typer.Option(Path("data/normalized"), help="Output of the normalize stage."),
    out_dir: Path = typer.Option(Path("models/vocab"), help="Where spm.model, spm.vocab and vocab.json go."),
) -> None:
    """Train a SentencePiece (bpe or unigram) vocabulary with fixed special-token ids
    [PAD]=0 [UNK]=1 [CLS]=2 [SEP]=3 [MASK]=4; placeholders such as `user` and `url` are single pieces."""
    p = load(params)
    from twilbert.text.normalize import placeholder_tokens
    from twilbert.text.vocab import train_vocab

    inputs = [normalized_dir / "pairs.parquet", normalized_dir / "tweets.parquet"]
    out_dir.mkdir(parents=True, exist_ok=True)
    with tracked("vocab", params, p, ("vocab", "normalize.rules"), fallback=Path("logs/tracking/vocab.jsonl")) as t:
        model_path = run_guarded(
            train_vocab, inputs, p.vocab, out_dir / "spm", placeholder_tokens(p.normalize.rules.effective())
        )
        t.log_artifact(out_dir / "vocab.json")
    typer.echo(f"vocab: wrote {model_path}")
