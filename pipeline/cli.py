"""The ``twilbert`` command: one subcommand per pipeline stage (each also a DVC stage in dvc.yaml)."""

from __future__ import annotations

import typer

from stages import evaluate, finetune, normalize, pairs, preset, pretrain, report, vocab

app = typer.Typer(
    name="twilbert",
    help="TWilBERT: pre-train, evaluate and fine-tune BERT-like models for Spanish Twitter.\n\n"
    "Every subcommand is one stage of the DVC pipeline (`dvc repro` runs them in order) and reads "
    "its settings from params.yaml.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("normalize")(normalize.main)
app.command("vocab")(vocab.main)
app.command("pairs")(pairs.main)
app.command("pretrain")(pretrain.main)
app.command("evaluate")(evaluate.main)
app.command("finetune")(finetune.main)
app.command("report")(report.main)
app.command("preset")(preset.main)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
