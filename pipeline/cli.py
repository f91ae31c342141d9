"""The ``twilbert`` command: one subcommand per pipeline stage (each also a DVC stage in dvc.yaml)."""

from __future__ import annotations

import typer

from stages import compare, embed, evaluate, finetune, hf, normalize, onnx, pairs, predict, preset, pretrain, report, vocab

app = typer.Typer(
    name="twilbert",
    help="TWilBERT: pre-train, evaluate and fine-tune BERT-like models for Spanish Twitter.\n\n"
    "normalize, vocab, pairs, pretrain, evaluate, finetune and report are the stages of the DVC "
    "pipeline (`dvc repro` runs them in order) and read their settings from params.yaml; preset, "
    "compare, predict, embed, export-hf, import-hf and export-onnx use what the pipeline made.",
    no_args_is_help=True,
    # Help texts are plain text: paths like models/pretrain[/final] must not be read as rich markup.
    rich_markup_mode=None,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version() -> str:
    """The installed distribution's version (pyproject.toml), as pip reports it."""
    from importlib import metadata

    try:
        return metadata.version("twilbert")
    except metadata.PackageNotFoundError:
        return "unknown (the twilbert package is not installed: pip install -e .)"


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"twilbert {_version()}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_show_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """TWilBERT: pre-train, evaluate and fine-tune BERT-like models for Spanish Twitter."""


app.command("normalize")(normalize.main)
app.command("vocab")(vocab.main)
app.command("pairs")(pairs.main)
app.command("pretrain")(pretrain.main)
app.command("evaluate")(evaluate.main)
app.command("finetune")(finetune.main)
app.command("report")(report.main)
app.command("preset")(preset.main)
app.command("compare")(compare.main)
app.command("predict")(predict.main)
app.command("embed")(embed.main)
app.command("export-hf")(hf.export_main)
app.command("import-hf")(hf.import_main)
app.command("export-onnx")(onnx.export_main)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
