"""`twilbert --help` and `twilbert <command> --help` work for every command."""

from __future__ import annotations

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from pipeline.cli import app

COMMANDS = sorted(get_command(app).commands)


def test_every_stage_of_dvc_yaml_is_a_command():
    import yaml

    from tests.conftest import REPO

    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        cmd = stage["do"]["cmd"] if "do" in stage else stage["cmd"]
        assert cmd.split()[:3] == ["python", "-m", "pipeline.cli"] and cmd.split()[3] in COMMANDS, name


def test_root_help_lists_every_command():
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0, result.output
    for name in COMMANDS:
        assert name in result.output


@pytest.mark.parametrize("name", COMMANDS)
def test_command_help(name):
    result = CliRunner().invoke(app, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output and "--help" in result.output
