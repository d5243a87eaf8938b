"""The `lpgnet` console script, composed at the top so that neither package imports the other's commands.

    lpgnet serve                       the service (`app.cli`)
    lpgnet bench ...                   the benchmark (`python -m bench`, arguments passed through)
    lpgnet train | evaluate | ...      training and evaluation (`model.cli`)

`app` knows nothing of training and `model` nothing of the service (README, Architecture); only this
module sees both. It lives beside the packages, not in them, and is installed as a top-level module.
"""

from __future__ import annotations

from typing import Annotated

import typer


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"lpgnet {version('lpgnet-erc')}")
        except PackageNotFoundError:  # run from a checkout that was never installed
            typer.echo("lpgnet (not installed)")
        raise typer.Exit()


VersionOption = Annotated[
    bool,
    typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit."),
]


def _options(version: VersionOption = False) -> None:
    """LPGNet emotion recognition in conversation."""


def bench(ctx: typer.Context) -> None:
    """Run the benchmark (`python -m bench`; arguments pass through, e.g. --quick --json)."""
    import os
    import sys

    # the image ships without bench/: hand over to its own entry point instead of importing it here
    os.execv(sys.executable, [sys.executable, "-m", "bench", *ctx.args])


def build_cli() -> typer.Typer:
    """`serve`, `bench`, and the model's commands (train, evaluate, convert, params, export, tune-text)."""
    from app.cli import serve
    from model.cli import cli as model_cli

    cli = typer.Typer(name="lpgnet", help="LPGNet emotion recognition in conversation.", no_args_is_help=True)
    cli.callback()(_options)
    cli.command()(serve)
    cli.command(
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True}, add_help_option=False
    )(bench)
    cli.add_typer(model_cli)
    return cli


def main() -> None:
    build_cli()()


if __name__ == "__main__":
    main()
