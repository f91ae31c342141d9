"""Command `embed`: contextual embeddings of a file of texts (not a DVC stage).

From a pre-trained checkpoint (``models/pretrain/final``; tokenizer from ``--vocab-model`` or
``pretrain.json``; normalisation rules from ``pretrain.json``, where the pretrain stage records them,
else from ``--params`` when that file exists, else the defaults) or a fine-tuned model directory (its
own tokenizer and rules). The checkpoint's own rules win over params.yaml, so an edit of params.yaml
after training cannot silently change what the model is given. Output: ``.arrow`` (``id`` +
``embedding`` fixed-size list) or ``.npy`` (N x H float32, input order).
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from pipeline.common import PARAMS_OPTION, check_device, fail, load, refuse_columns_on_stdin, run_guarded


def main(
    model: Path = typer.Option(..., "--model", "-m", help="Pre-trained (models/pretrain/final) or fine-tuned model directory."),
    input: Path = typer.Option(None, "--input", "-i", help="TSV/CSV/JSONL file with a header; default: stdin, one text per line."),
    text_column: str = typer.Option("text", help="Column with the texts (files only)."),
    aux_column: str = typer.Option(None, help="Column with second texts: embed [CLS] a [SEP] b [SEP]."),
    id_column: str = typer.Option(None, help="Column stored as `id` in .arrow output (default: the row number)."),
    fmt: str = typer.Option("auto", "--format", help="auto (from the extension) | tsv | csv | jsonl."),
    output: Path = typer.Option(..., "--output", "-o", help="x.arrow or x.npy."),
    pooling: str = typer.Option("cls", help="cls (final [CLS] state) | mean (over real tokens, [CLS]/[SEP] included)."),
    vocab_model: Path = typer.Option(None, help="SentencePiece model of a pre-trained checkpoint (default: the one pretrain.json records)."),
    params: Path = PARAMS_OPTION,
    batch_size: int = typer.Option(64, min=1, help="Texts per forward pass (batches are sorted by length)."),
    device: str = typer.Option("cpu", help="cpu | cuda | cuda:N | mps | auto (cuda if available, else cpu)."),
    compile: bool = typer.Option(False, "--compile/--no-compile", help="torch.compile the forward pass (a one-off compilation of tens of seconds, and on CPU no faster than eager, so it is off unless asked for; benchmarks/RESULTS.md#inference)."),
    precision: str = typer.Option("fp32", help="fp32 | bf16: matrix products in bfloat16 (autocast). Much faster on a CPU with native bf16 (AVX512-BF16/AMX); outputs move slightly (benchmarks/RESULTS.md#inference). | int8: dynamic int8 linears (CPU only)."),
    progress: bool = typer.Option(None, "--progress/--no-progress", help="Progress bar (default: on when stderr is a terminal)."),
) -> None:
    """Embed texts with a TWilBERT encoder (cls or mean pooling) into .arrow or .npy."""
    from twilbert.finetune.model import FORMAT, resolve_pretrained_dir
    from twilbert.inference import InputError, OutputError, POOLINGS, pretrained_rules, read_input_file, read_lines, write_embeddings
    from twilbert.inference import load as load_model
    from twilbert.train.checkpoint import read_config

    if pooling not in POOLINGS:
        fail(f"--pooling: expected one of {list(POOLINGS)}, got {pooling!r}")
    if output.suffix not in (".npy", ".arrow"):
        fail(f"--output: {output} must end in .arrow or .npy")
    check_device(device)
    if input is None:
        refuse_columns_on_stdin(aux_column=aux_column, id_column=id_column)
    normalize, note = None, ""  # None: the model's own rules
    directory = run_guarded(resolve_pretrained_dir, model)
    finetuned = run_guarded(lambda: read_config(directory).get("format") == FORMAT)
    if not finetuned and run_guarded(pretrained_rules, directory) is None:
        # An older or imported checkpoint records no rules: the pipeline's, else the defaults.
        if params.is_file():
            normalize = load(params).normalize.rules.effective()
        note = f"; {directory} records no normalisation rules, so {params if params.is_file() else 'the defaults'} gave them"
    predictor = run_guarded(load_model, model, vocab_model=vocab_model, normalize=normalize, device=device, precision=precision)
    data = run_guarded(read_lines, sys.stdin) if input is None else run_guarded(read_input_file, input, text_column, aux_column, id_column, fmt)
    show = progress if progress is not None else sys.stderr.isatty()
    predictor.compile = compile
    try:
        vectors = predictor.embed(data.texts, data.aux, pooling=pooling, batch_size=batch_size, progress=show)
        write_embeddings(vectors, output, data.ids)
    except (InputError, OutputError) as exc:
        fail(str(exc))
    typer.echo(f"embed: {vectors.shape[0]} x {vectors.shape[1]} ({pooling}) -> {output}{note}", err=True)
