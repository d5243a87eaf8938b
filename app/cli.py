"""The service's command, `lpgnet serve`; `lpgnet_cli` (top level) composes it with the others."""

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


__all__ = ["serve"]
