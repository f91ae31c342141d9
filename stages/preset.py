"""Command `preset`: the original TWilBERT-Base / -Large pre-training recipes, one command away."""

from __future__ import annotations

from pathlib import Path

import typer

from pipeline.common import PARAMS_OPTION, fail, run_guarded


def main(
    name: str = typer.Argument(..., help="twilbert-base or twilbert-large."),
    params: Path = PARAMS_OPTION,
    write: bool = typer.Option(False, "--write", help="Write the preset into params.yaml instead of printing -S args."),
) -> None:
    """Print `dvc exp run` overrides for a preset, e.g. `dvc exp run -n base $(twilbert preset twilbert-base)`,
    or apply it to params.yaml with --write (comments kept)."""
    from pipeline.presets import dvc_set_args, write_preset

    try:
        args = dvc_set_args(name)
    except KeyError as exc:
        fail(str(exc.args[0]))
    if write:
        run_guarded(write_preset, name, params)  # validated before params.yaml is replaced
        typer.echo(f"preset {name} written to {params}")
    else:
        typer.echo(" ".join(args))
