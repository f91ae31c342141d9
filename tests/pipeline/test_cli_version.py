"""`twilbert --version` prints the installed distribution's version (pyproject.toml), and only that."""

from __future__ import annotations

from importlib import metadata

from typer.testing import CliRunner

from pipeline.cli import app


def test_version_from_the_package_metadata():
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.output == f"twilbert {metadata.version('twilbert')}\n"


def test_version_comes_first_and_commands_still_need_their_options():
    assert CliRunner().invoke(app, ["--version", "normalize"]).output.startswith("twilbert ")  # eager: wins
    assert CliRunner().invoke(app, []).exit_code in (0, 2)  # no args: the help, as before
    assert "Usage:" in CliRunner().invoke(app, []).output
