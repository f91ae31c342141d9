"""Stage `vocab`: train the SentencePiece vocabulary on the normalised text."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer

from pipeline.common import PARAMS_OPTION, StageError, guarded, load, require_normalized, run_guarded, tracked
from pipeline.committed import record_timing, split_timing
from pipeline.outlock import lock_outputs
from pipeline.stage_params import stage_params
from twilbert.utils import atomic_write_text


def main(
    params: Path = PARAMS_OPTION,
    normalized_dir: Path = typer.Option(Path("data/normalized"), help="Output of the normalize stage."),
    out_dir: Path = typer.Option(Path("models/vocab"), help="Where spm.model, spm.vocab and vocab.json go (or the adopted tokenizer.json)."),
    stats_path: Path = typer.Option(Path("reports/vocab/stats.json"), help="Small metrics summary (DVC metrics)."),
) -> None:
    """Train a SentencePiece (bpe or unigram) vocabulary with fixed special-token ids
    [PAD]=0 [UNK]=1 [CLS]=2 [SEP]=3 [MASK]=4; placeholders such as `user` and `url` are single pieces.
    With vocab.pretrained set (an imported checkpoint, see `twilbert import-hf`), copy its tokenizer
    instead, for continued pre-training of that checkpoint.

    Memory does not grow with the corpus (it is streamed into a fixed-size sample); it grows with
    vocab.input_sentence_size (figures per size: benchmarks/RESULTS.md#vocabulary)."""
    p = load(params)
    lock_outputs(out_dir)
    from twilbert.text.normalize import glued_placeholder_tokens, placeholder_keys, placeholder_tokens
    from twilbert.metadata import read_json
    from twilbert.text.vocab import adopt_vocab, train_vocab

    inputs = list(require_normalized(normalized_dir))  # train_vocab skips missing files ("the corpus is empty")
    with guarded():
        stats_path.unlink(missing_ok=True)  # written last: a failed run leaves none, not the previous run's
        out_dir.mkdir(parents=True, exist_ok=True)
    rules = p.normalize.rules.effective()
    with tracked("vocab", params, p, stage_params("vocab"), fallback=Path("logs/tracking/vocab.jsonl")) as t:
        start = time.perf_counter()
        if p.vocab.pretrained:
            model_path = run_guarded(adopt_vocab, p.vocab.pretrained, inputs, p.vocab, out_dir, placeholder_tokens(rules))
        else:
            model_path = run_guarded(
                train_vocab, inputs, p.vocab, out_dir / "spm", placeholder_tokens(rules), glued_placeholder_tokens(rules)
            )
        seconds = time.perf_counter() - start
        summary = run_guarded(read_json, out_dir / "vocab.json", error=StageError)
        stats = summarize(summary, seconds)
        committed, timing = split_timing(stats)  # train_seconds: MLflow and logs/timing.json only
        with guarded():
            stats_path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(stats_path, json.dumps(committed, indent=2) + "\n")
        record_timing({"vocab": timing})
        t.log_metrics(stats)
        t.log_artifact(out_dir / "vocab.json")
    if p.vocab.pretrained:
        typer.echo(f"vocab: copied {p.vocab.pretrained} to {model_path} ({stats['vocab_size']} tokens; on "
                   f"{stats['probe_texts']} texts unk rate {stats['unk_rate']:.2e}, {stats['pieces_per_word']:.2f} pieces per word)")
        # An imported vocabulary may cut our placeholders ("user" -> "us ##er"): still correct, but
        # each mention then costs several positions and no longer means one thing; say which key fixes it.
        single = summary["stats"]["placeholder_single_piece"]
        for key, token in placeholder_keys(rules):
            if not single.get(token, True):
                typer.echo(f"vocab: warning: placeholder {token!r} is not one token of this tokenizer; "
                           f"set normalize.rules.{key} to a word it has as one token")
        return
    typer.echo(
        f"vocab: wrote {model_path} ({stats['vocab_size']} pieces from {stats['texts_used']} texts in "
        f"{seconds:.1f} s; unk rate {stats['unk_rate']:.2e}, placeholders single-piece {stats['placeholders_single_piece']:.0%})"
    )


def summarize(summary: dict, seconds: float) -> dict[str, float]:
    """The scalar figures of ``vocab.json`` plus the training time: the stage's MLflow metrics (all numbers).

    ``train_seconds`` goes to MLflow and ``logs/timing.json`` only, neither to ``vocab.json`` nor to the
    stats file (DVC outputs, which must not change when nothing but the clock did)."""
    s = summary["stats"]
    return {
        "vocab_size": summary["vocab_size"],
        "learned_pieces": summary["learned_pieces"],
        "user_defined_pieces": summary["user_defined_pieces"],
        "texts_seen": summary["texts_seen"],
        "texts_used": summary["texts_used"],
        "train_seconds": round(seconds, 3),
        "probe_texts": s["probe_texts"],
        "unk_rate": s["unk_rate"],
        "pieces_per_text": s["pieces_per_text"],
        "pieces_per_word": s["pieces_per_word"],
        "placeholders_single_piece": s["placeholders_single_piece"],
        "placeholder_occurrences": s["placeholder_occurrences"],
        "placeholder_coverage": s["placeholder_coverage"],
    }
