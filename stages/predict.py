"""Command `predict`: labels for new texts with a fine-tuned model (not a DVC stage).

Reads texts from stdin (one per line) or a TSV / CSV / JSON-lines file, and writes one JSON line per
input (same order) to stdout or ``--output``. Everything the model needs (normalisation rules,
tokenizer, labels, max_len) comes from the model directory: ``twilbert.inference``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from pipeline.common import check_device, fail, refuse_columns_on_stdin, run_guarded


def main(
    model: Path = typer.Option(..., "--model", "-m", help="A fine-tuned model directory (models/finetune/<task>)."),
    input: Path = typer.Option(None, "--input", "-i", help="TSV/CSV/JSONL file with a header; default: stdin, one text per line."),
    text_column: str = typer.Option("text", help="Column with the texts (files only)."),
    aux_column: str = typer.Option(None, help="Column with the second texts, for text-pair models."),
    id_column: str = typer.Option(None, help="Column copied to the output as \"id\"."),
    fmt: str = typer.Option("auto", "--format", help="auto (from the extension) | tsv | csv | jsonl."),
    output: Path = typer.Option(None, "--output", "-o", help="Write JSON lines here instead of stdout."),
    batch_size: int = typer.Option(64, min=1, help="Texts per forward pass (batches are sorted by length)."),
    device: str = typer.Option("cpu", help="cpu | cuda | cuda:N | mps | auto (cuda if available, else cpu)."),
    compile: bool = typer.Option(False, "--compile/--no-compile", help="torch.compile the forward pass (a one-off 30-60 s compilation; on 2 CPU cores it ran 0.9-1.1x the eager speed, so it is off unless asked for)."),
    precision: str = typer.Option("fp32", help="fp32 | bf16: matrix products in bfloat16 (autocast). On a CPU with native bf16 (AVX512-BF16/AMX) ~3x faster; probabilities move by ~1e-3. | int8: dynamic int8 linears (CPU only), the fastest without native bf16."),
    progress: bool = typer.Option(None, "--progress/--no-progress", help="Progress bar (default: on for files when stderr is a terminal)."),
) -> None:
    """Predict labels (or values) for texts: one JSON line per input,
    {"label": ..., "probabilities": {label: p}} (multi-label: "labels": [...]; regression: "value")."""
    from twilbert.inference import InputError, load, read_input_file, read_lines, write_jsonl

    if fmt not in ("auto", "tsv", "csv", "jsonl"):
        fail(f"--format: expected auto, tsv, csv or jsonl, got {fmt!r}")
    check_device(device)
    if input is None:
        refuse_columns_on_stdin(aux_column=aux_column, id_column=id_column)
    predictor = run_guarded(load, model, device=device, precision=precision)
    if not predictor.is_classifier:
        fail(f"{model}: a pre-trained encoder has no classifier head; predict needs a fine-tuned model (twilbert embed gives embeddings)")
    if input is None:
        if predictor.text_pair:
            fail(f"{model}: a text-pair model needs the second texts: use --input FILE with --aux-column")
        data = run_guarded(read_lines, sys.stdin)
    else:
        if predictor.text_pair and aux_column is None:
            fail(f"{model}: a text-pair model needs the second texts: give --aux-column")
        data = run_guarded(read_input_file, input, text_column, aux_column, id_column, fmt)
    show = progress if progress is not None else (input is not None and sys.stderr.isatty())
    predictor.compile = compile
    try:
        rows = predictor.predict(data.texts, data.aux, batch_size=batch_size, progress=show)
    except InputError as exc:
        fail(str(exc))
    if output is None:
        write_jsonl(rows, sys.stdout, data.ids)
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    with open(output, "w", encoding="utf-8") as f:
        write_jsonl(rows, f, data.ids)
    typer.echo(f"predict: {len(rows)} predictions -> {output}", err=True)

