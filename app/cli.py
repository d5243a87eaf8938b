"""The `lpgnet` command: the model's commands (train, evaluate, ...) plus `serve`."""

from __future__ import annotations

import logging
from typing import Annotated

import typer

log = logging.getLogger(__name__)

HostOption = Annotated[str | None, typer.Option(help="Bind address (default: LPGNET_HOST, 127.0.0.1).")]
PortOption = Annotated[int | None, typer.Option(help="Port (default: LPGNET_PORT, 8000).")]


def serve(host: HostOption = None, port: PortOption = None) -> None:
    """Serve the HTTP API with uvicorn; configuration comes from LPGNET_* environment variables."""
    from app.server import run
    from app.settings import Settings

    settings = Settings()
    overrides = {k: v for k, v in (("host", host), ("port", port)) if v is not None}
    if overrides:
        settings = Settings(**{**settings.model_dump(), **overrides})  # re-validated
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    run(settings)


def bench(ctx: typer.Context) -> None:
    """Run the benchmark (`python -m bench`; arguments pass through, e.g. --quick --json)."""
    import os
    import sys

    # bench imports app and model, never the other way round: hand over to its own entry point
    os.execv(sys.executable, [sys.executable, "-m", "bench", *ctx.args])


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


def build_cli() -> typer.Typer:
    """`serve` and `bench`, plus the model's commands (train, evaluate, params, export)."""
    cli = typer.Typer(name="lpgnet", help="LPGNet emotion recognition in conversation.", no_args_is_help=True)
    cli.callback()(_options)
    cli.command()(serve)
    cli.command(
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True}, add_help_option=False
    )(bench)
    from model.cli import cli as model_cli

    cli.add_typer(model_cli)
    return cli


def main() -> None:
    build_cli()()


if __name__ == "__main__":
    main()
