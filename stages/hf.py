"""Commands `export-hf` / `import-hf`: Hugging Face transformers interop (not DVC stages).

Needs the optional ``hf`` extra (``pip install -e .[hf]``). What maps and what is refused:
``twilbert/hf/`` (``export.py``, ``import_.py``; a fine-tuned classifier: ``classifier.py``).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import typer

from pipeline.common import run_guarded


def export_main(
    model: Path = typer.Option(..., "--model", "-m", help="Pre-trained checkpoint (models/pretrain[/final]) or fine-tuned model directory."),
    out: Path = typer.Option(..., "--out", "-o", help="Output directory (config.json, model.safetensors, tokenizer.json...)."),
    vocab_model: Path = typer.Option(None, help="SentencePiece model (default: the model's own, or the one pretrain.json records)."),
    family: str = typer.Option(None, help="bert | albert | roberta | xlm-roberta (default: what the model was imported from, else bert/albert)."),
    encoder_only: bool = typer.Option(False, "--encoder-only", help="A fine-tuned model: export its encoder (*Model), not the classifier."),
) -> None:
    """Export a TWilBERT checkpoint to transformers (BERT; ALBERT when factorised / shared; RoBERTa / XLM-R
    when imported from one), loadable by AutoModel / AutoTokenizer.from_pretrained(OUT). A fine-tuned
    model directory becomes a *ForSequenceClassification with a model card and a tokenizer that
    normalises raw tweets (pipeline("text-classification", model=OUT))."""
    from twilbert.hf import export_hf

    info = run_guarded(export_hf, model, out, vocab_model=vocab_model, family=family, encoder_only=encoder_only)
    if "max_abs_diff_probabilities" in info:
        typer.echo(f"export-hf: {info['architecture']} ({info['problem_type']}, labels {info['labels']}) -> {out} "
                   f"(max |diff| of probabilities {info['max_abs_diff_probabilities']:.2g}); model card {out / 'README.md'}")
        if not info["tokenizer_normalizes_tweets"]:
            typer.echo("  the tokenizer does not normalise: the model was fine-tuned without normalize rules")
        return
    typer.echo(f"export-hf: {info['architecture']} -> {out} (max |diff| of hidden states {info['max_abs_diff_hidden']:.2g})")
    for item in info["not_exported"]:
        typer.echo(f"  not exported: {item}")


def import_main(
    model: Path = typer.Option(..., "--model", "-m", help="A transformers BERT, ALBERT, RoBERTa or XLM-RoBERTa directory."),
    out: Path = typer.Option(..., "--out", "-o", help="Output TWilBERT checkpoint directory."),
    approximate_gelu: bool = typer.Option(False, help="Accept a tanh-approximate GELU (gelu_new...); TWilBERT's is exact."),
    seed: int = typer.Option(0, help="Seed for the heads the checkpoint does not have (ROP; MLM if absent)."),
    max_len: int = typer.Option(
        None, "--max-len", help="Keep 2 * MAX_LEN + 3 positions (representation.max_len); needed to continue pre-training a 512-position BERT."
    ),
) -> None:
    """Import a transformers BERT/ALBERT/RoBERTa/XLM-R checkpoint as a TWilBERT model (config.json + weights), e.g.
    as training.path_initial_weights for continued pre-training."""
    from twilbert.hf import import_hf

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # reported below, one line each
        info = run_guarded(import_hf, model, out, approximate_gelu=approximate_gelu, seed=seed, max_len=max_len)
    diff = info["max_abs_diff_hidden"]
    typer.echo(f"import-hf: {info['model_type']} -> {out} (MLM head {info['mlm_head']}; max |diff| of hidden states {diff:.2g})")
    for w in info["warnings"]:
        typer.echo(f"  warning: {w}")
    # max_positions and vocab_size are derived in params.yaml (the loader refuses them under model:),
    # so they are printed as the keys they come from.
    model = dict(info["model"])
    positions, vocab_size = model.pop("max_positions"), model.pop("vocab_size")
    typer.echo("  model section (params.yaml `model:` must match it for training.path_initial_weights):")
    typer.echo("  " + json.dumps(model, sort_keys=True))
    if (positions - 3) % 2 == 0:
        typer.echo(f"  and vocab.vocab_size: {vocab_size}, representation.max_len: {(positions - 3) // 2} "
                   f"({positions} positions = 2 * max_len + 3)")
    else:
        typer.echo(f"  and vocab.vocab_size: {vocab_size}; its {positions} positions are not 2 * max_len + 3, so it can be "
                   "fine-tuned (finetuning.path_load_weights) and embedded; to continue pre-training, import it with --max-len")
    if info["tokenizer"]:
        typer.echo(f"  and vocab.pretrained: {out} (its tokenizer {Path(info['tokenizer']).name}, instead of training one)")
    if info.get("normalize_rules"):
        typer.echo(f"  and normalize.rules: {json.dumps(info['normalize_rules'])} ({info['normalize_rules_why']})")
