"""The `lpgnet` console script (`lpgnet_cli`): the service, benchmark and model commands composed at the
top, and the service package free of training code."""

from __future__ import annotations

from typer.testing import CliRunner

from lpgnet_cli import build_cli


def test_serve_is_a_command_with_host_and_port() -> None:
    result = CliRunner().invoke(build_cli(), ["serve", "--help"])
    assert result.exit_code == 0, result.output
    assert "--host" in result.output and "--port" in result.output


def test_model_commands_are_mounted_beside_serve() -> None:
    result = CliRunner().invoke(build_cli(), ["--help"])
    assert result.exit_code == 0, result.output
    assert "serve" in result.output and "train" in result.output
    assert "export" in result.output and "bench" in result.output


def test_bench_hands_its_arguments_to_the_benchmark_entry_point() -> None:
    import subprocess
    import sys

    code = "import sys; from lpgnet_cli import main; sys.argv = ['lpgnet', 'bench', '--help']; main()"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "usage: python -m bench" in done.stdout and "--quick" in done.stdout


def test_the_service_package_imports_no_training_code() -> None:
    """DESIGN: `app` knows nothing of training; only the top-level `lpgnet_cli` sees both sides."""
    import subprocess
    import sys

    code = (
        "import sys, app.cli, app.main, app.engine, app.runtime; "
        "print(sorted(m for m in sys.modules if m in ('model.cli', 'model.train', 'model.cli_tune')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
