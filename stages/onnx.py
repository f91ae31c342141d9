"""Command `export-onnx`: a fine-tuned classifier for ONNX Runtime (not a DVC stage).

Needs the optional ``onnx`` extra (``pip install -e .[onnx]``). What is written and how it is
verified: ``twilbert/onnx_export.py``.
"""

from __future__ import annotations

from pathlib import Path

import typer

from pipeline.common import run_guarded


def export_main(
    model: Path = typer.Option(..., "--model", "-m", help="A fine-tuned model directory (models/finetune/<task>)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output directory (model.onnx, tokenizer, onnx_export.json)."),
    int8: bool = typer.Option(False, "--int8", help="Also write model.int8.onnx: ONNX Runtime's dynamic int8 (QInt8 weights)."),
) -> None:
    """Export a fine-tuned classifier to ONNX (inputs input_ids, token_type_ids, attention_mask; outputs
    logits, probabilities), checked by ONNX Runtime against our fp32 on a probe batch."""
    from twilbert.onnx_export import export_onnx

    info = run_guarded(export_onnx, model, out, int8=int8)
    diffs = info["max_abs_diff_probabilities"]
    for kind, name in info["files"].items():
        typer.echo(f"export-onnx: {kind} -> {out / name} (max |diff| of probabilities vs our fp32 {diffs[kind]:.2g})")
    typer.echo(f"  {info['task_type']}, labels {info['labels']}, max_len {info['max_len']}; tokenizer: {info['tokenizer']}")
