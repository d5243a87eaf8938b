"""The app factory and its lifespan.

`create_app(settings)` wires routes, middleware and error handlers; nothing is loaded at import. The
lifespan builds the store, loads the engine once (in a thread, failing start-up on a bad
configuration), then warms it up in the background: /health answers at once, /ready only after the
warm-up (and while the store answers).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from fastapi import FastAPI, Response

from app.api.routes import conversations, streams, system
from app.api.routes.pages import install_pages
from app.api.routes.system import metrics_response
from app.deps import Services
from app.engine import Engine
from app.errors import install_error_handlers
from app.lifecycle import Lifecycle
from app.metrics import Metrics
from app.middleware import BodyLimitsMiddleware, RequestContextMiddleware
from app.security import ApiKeys
from app.settings import Settings
from app.store import build_store

log = logging.getLogger(__name__)


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    services: Services = app.state.services
    store = build_store(services.settings)
    services.store = store
    engine: Engine | None = None
    warm_up: asyncio.Task[None] | None = None
    metrics_server = None
    try:
        engine = await asyncio.to_thread(Engine.load, services.settings, store, services.metrics)
        engine.start()
        services.engine = engine
        warm_up = asyncio.create_task(_warm_up(engine), name="lpgnet-warm-up")
        metrics_server = await _serve_metrics(services)
        yield
    finally:
        if metrics_server is not None:
            await metrics_server.shutdown()
        if warm_up is not None:
            warm_up.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await warm_up
        services.engine = None
        if engine is not None:
            await engine.close()
        services.store = None
        await store.close()


async def _serve_metrics(services: Services) -> uvicorn.Server | None:
    """With `metrics_port`, every metric (conversation counts included) on a listener of its own, for a
    scraper on a private network: no key there, and nothing of the API. None without it.

    It runs on this event loop (the store's), started and stopped by the lifespan, not as a process of
    its own: uvicorn's `startup`/`shutdown` without `serve`, which would take over the signals.
    """
    settings = services.settings
    if settings.metrics_port is None:
        return None

    async def scrape() -> Response:
        return await metrics_response(services, conversation_counts=True)

    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    app.add_api_route("/metrics", scrape, methods=["GET"], response_class=Response)
    install_error_handlers(app)
    config = uvicorn.Config(  # no log config: uvicorn's loggers are the main server's, left alone
        app, host=settings.metrics_host, port=settings.metrics_port, lifespan="off", log_config=None
    )
    config.load()
    server = uvicorn.Server(config)
    server.lifespan = config.lifespan_class(config)  # what `serve` would set up (lifespan "off")
    await server.startup()
    log.info("metrics on http://%s:%d/metrics", settings.metrics_host, settings.metrics_port)
    return server


async def _warm_up(engine: Engine) -> None:
    try:
        await engine.warm_up()
    except asyncio.CancelledError:
        raise
    except Exception:  # stay alive but never ready: /ready keeps answering 503
        log.exception("warm-up failed; the service will not report ready")


def create_app(settings: Settings) -> FastAPI:
    metrics = Metrics()
    app = FastAPI(
        title="LPGNet emotion recognition in conversation",
        version="0.1.0",
        description=(
            "POST each utterance of a live conversation (audio and/or transcript) and get back its "
            "emotion, judged by LPGNet in causal context: the conversation so far."
        ),
        lifespan=lifespan,
        docs_url=None,  # /docs and /redoc: install_pages serves them with local assets
        redoc_url=None,
    )
    lifecycle = Lifecycle()
    app.state.services = Services(
        settings=settings, metrics=metrics, api_keys=ApiKeys(settings.api_keys), lifecycle=lifecycle
    )
    app.include_router(conversations.router)
    app.include_router(streams.router)
    app.include_router(system.router)
    install_pages(app, settings)
    install_error_handlers(app)
    if not settings.api_keys:
        _document_open_access(app)
    # added last = outermost: the request id exists before the body limits answer
    app.add_middleware(
        BodyLimitsMiddleware,
        max_bytes=settings.max_request_bytes,
        timeout_s=settings.body_timeout_s,
        min_rate=settings.body_min_rate,
    )
    app.add_middleware(RequestContextMiddleware, metrics=metrics, lifecycle=lifecycle)
    return app


def _document_open_access(app: FastAPI) -> None:
    """Without API keys the service is open: its OpenAPI must not claim a bearer token is required."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            for operations in schema.get("paths", {}).values():
                for operation in operations.values():
                    operation.pop("security", None)
            schema.get("components", {}).pop("securitySchemes", None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
