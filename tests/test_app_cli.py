"""The `lpgnet` console script."""

from __future__ import annotations

from typer.testing import CliRunner

from app.cli import build_cli


def test_serve_is_a_command_with_host_and_port() -> None:
    result = CliRunner().invoke(build_cli(), ["serve", "--help"])
    assert result.exit_code == 0, result.output
    assert "--host" in result.output and "--port" in result.output


def test_model_commands_are_mounted_beside_serve() -> None:
    result = CliRunner().invoke(build_cli(), ["--help"])
    assert result.exit_code == 0, result.output
    assert "serve" in result.output and "train" in result.output
