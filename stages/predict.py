"""Command `predict`: labels for new texts with a fine-tuned model (not a DVC stage).

Reads texts from stdin (one per line) or a TSV / CSV / JSON-lines file, and writes one JSON line per
input (same order) to stdout or ``--output``; a file is streamed in chunks, tokenised while the model
computes (``twilbert.bulk``). Everything the model needs (normalisation rules,
tokenizer, labels, max_len) comes from the model directory: ``twilbert.inference``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import typer

from pipeline.common import check_device, fail, guarded, refuse_columns_on_stdin, run_guarded


def main(
    model: Path = typer.Option(..., "--model", "-m", help="A fine-tuned model directory (models/finetune/<task>)."),
    input: Path = typer.Option(None, "--input", "-i", help="TSV/CSV/JSONL file with a header; default: stdin, one text per line."),
    text_column: str = typer.Option("text", help="Column with the texts (files only)."),
    aux_column: str = typer.Option(None, help="Column with the second texts, for text-pair models."),
    id_column: str = typer.Option(None, help="Column copied to the output as \"id\"."),
    fmt: str = typer.Option("auto", "--format", help="auto (from the extension) | tsv | csv | jsonl."),
    output: Path = typer.Option(None, "--output", "-o", help="Write JSON lines here instead of stdout."),
    batch_size: int = typer.Option(64, min=1, help="Texts per forward pass (batches are sorted by length)."),
    device: str = typer.Option("auto", help="auto (cuda if available, else cpu) | cpu | cuda | cuda:N | mps."),
    compile: bool = typer.Option(False, "--compile/--no-compile", help="torch.compile the forward pass (a one-off 30-60 s compilation; on 2 CPU cores it ran 0.9-1.1x the eager speed, so it is off unless asked for)."),
    precision: str = typer.Option("fp32", help="fp32 | bf16: matrix products in bfloat16 (autocast). On a CPU with native bf16 (AVX512-BF16/AMX) ~3x faster; probabilities move by ~1e-3. | int8: dynamic int8 linears (CPU only), the fastest without native bf16."),
    progress: bool = typer.Option(None, "--progress/--no-progress", help="Progress bar (default: on for files when stderr is a terminal)."),
) -> None:
    """Predict labels (or values) for texts: one JSON line per input,
    {"label": ..., "probabilities": {label: p}} (multi-label: "labels": [...]; regression: "value")."""
    from twilbert.inference import InputError, OutputError, jsonl_text, load, read_lines
    from twilbert.utils import atomic_write_text

    if fmt not in ("auto", "tsv", "csv", "jsonl"):
        fail(f"--format: expected auto, tsv, csv or jsonl, got {fmt!r}")
    check_device(device)
    if input is None:
        refuse_columns_on_stdin(aux_column=aux_column, id_column=id_column)
    started = time.perf_counter()
    predictor = run_guarded(load, model, device=device, precision=precision)
    load_s = time.perf_counter() - started
    if not predictor.is_classifier:
        fail(f"{model}: a pre-trained encoder has no classifier head; predict needs a fine-tuned model (twilbert embed gives embeddings)")
    predictor.compile = compile
    if input is None:
        if predictor.text_pair:
            fail(f"{model}: a text-pair model needs the second texts: use --input FILE with --aux-column")
        data = run_guarded(read_lines, sys.stdin)
    else:
        if predictor.text_pair and aux_column is None:
            fail(f"{model}: a text-pair model needs the second texts: give --aux-column")
        return _predict_file(predictor, input, text_column, aux_column, id_column, fmt, output, batch_size,
                             progress if progress is not None else sys.stderr.isatty(), load_s)
    show = bool(progress)
    try:
        rows = predictor.predict(data.texts, data.aux, batch_size=batch_size, progress=show)
        text = jsonl_text(rows, data.ids)  # strict JSON, all of it, before a byte is written
    except (InputError, OutputError) as exc:
        fail(str(exc))
    if output is None:
        sys.stdout.write(text)
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    run_guarded(atomic_write_text, output, text)  # complete or absent, never half a file
    typer.echo(f"predict: {len(rows)} predictions -> {output}", err=True)



def _predict_file(predictor, input: Path, text_column, aux_column, id_column, fmt, output: Path | None, batch_size: int, progress: bool,
                  load_s: float) -> None:
    """A file, streamed in chunks (twilbert/bulk.py): output lines are written as chunks are computed
    (strict JSON per chunk); ``--output`` appears whole (atomic rename) once every row is predicted, and
    the summary line gives the rate apart from model loading (benchmarks/bulk_predict.py reads it)."""
    from twilbert.bulk import count_rows, predict_file, read_file_chunks
    from twilbert.inference import jsonl_text
    from twilbert.utils import atomic_write

    def stream(f) -> int:
        chunks = read_file_chunks(input, text_column, aux_column, id_column, fmt)
        total = count_rows(input, fmt) if progress else None
        return predict_file(predictor, chunks, lambda rows, ids: f.write(jsonl_text(rows, ids)), batch_size=batch_size, total=total, progress=progress)

    started = time.perf_counter()
    with guarded():
        if output is None:
            stream(sys.stdout)
            return
        output.parent.mkdir(parents=True, exist_ok=True)
        counted: list[int] = []

        def write(tmp: Path) -> None:
            with open(tmp, "w", encoding="utf-8") as f:
                counted.append(stream(f))

        atomic_write(output, write)
    seconds = time.perf_counter() - started
    typer.echo(f"predict: {counted[0]} predictions -> {output} ({counted[0] / seconds:.1f} texts/s over {seconds:.2f} s; "
               f"the model loaded in {load_s:.2f} s)", err=True)
