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
    import uvicorn

    from app.main import create_app
    from app.settings import Settings

    settings = Settings()
    overrides = {k: v for k, v in (("host", host), ("port", port)) if v is not None}
    if overrides:
        settings = Settings(**{**settings.model_dump(), **overrides})  # re-validated
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        timeout_graceful_shutdown=10,
    )


def build_cli() -> typer.Typer:
    """`serve`, plus the commands of `model.cli.cli` when that module imports (serving never needs it)."""
    cli = typer.Typer(name="lpgnet", help="LPGNet emotion recognition in conversation.", no_args_is_help=True)
    cli.command()(serve)
    try:
        from model.cli import cli as model_cli
    except ImportError as exc:
        log.debug("model commands unavailable: %s", exc)
    else:
        cli.add_typer(model_cli)
    return cli


def main() -> None:
    build_cli()()


if __name__ == "__main__":
    main()
