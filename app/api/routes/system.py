"""Liveness, readiness, Prometheus metrics and a description of the served model."""

from __future__ import annotations

import contextlib
import logging

from fastapi import APIRouter, Response

from app.deps import EngineDep, NamespaceDep, Services, ServicesDep
from app.exceptions import ServiceNotReady, ShuttingDown, StoreUnavailable
from app.schemas import HealthResponse, ModelRef, ModelResponse, Problem, ReadyResponse

log = logging.getLogger(__name__)

router = APIRouter(tags=["system"])


@router.get("/health", response_model=HealthResponse, summary="Liveness: the process answers")
async def health() -> HealthResponse:
    return HealthResponse()


@router.get(
    "/ready",
    response_model=ReadyResponse,
    summary="Readiness: model loaded and warmed up, store reachable, not shutting down",
    responses={503: {"model": Problem, "content": {"application/problem+json": {}}}},
)
async def ready(services: ServicesDep) -> ReadyResponse:
    if services.lifecycle.draining:  # first thing on SIGTERM: load balancers stop sending new requests
        raise ShuttingDown("the service is shutting down")
    engine = services.engine
    if engine is None or not engine.ready:
        raise ServiceNotReady("the model is loading or warming up")
    assert services.store is not None
    try:
        await services.store.ping()
    except StoreUnavailable:
        raise
    except Exception as exc:  # any failure to answer is "unavailable" for a readiness probe
        log.warning("store ping failed: %s", type(exc).__name__)
        raise StoreUnavailable("the conversation store is unavailable") from exc
    ckpt = engine.checkpoint
    return ReadyResponse(model=ModelRef(name=ckpt.name, version=ckpt.version))


@router.get(
    "/metrics",
    summary="Prometheus metrics (with API keys: a key is needed, and conversation counts are left out)",
    response_class=Response,
    responses={
        200: {"content": {"text/plain; version=0.0.4": {}}},
        401: {"model": Problem, "content": {"application/problem+json": {}}},
    },
)
async def metrics(services: ServicesDep, _namespace: NamespaceDep) -> Response:
    # With keys, any key may read the service's request and latency metrics, but not the number of
    # conversations: that counts every tenant's. LPGNET_METRICS_PORT serves all of it to a scraper.
    return await metrics_response(services, conversation_counts=not services.api_keys.enabled)


async def metrics_response(services: Services, *, conversation_counts: bool) -> Response:
    """The exposition, with the conversation gauges brought up to date when they are included."""
    registry = services.metrics
    store = services.store
    if conversation_counts and store is not None:
        with contextlib.suppress(StoreUnavailable):  # the gauge keeps its last value; /ready tells
            registry.active_conversations.set(await store.count_active())  # in memory: expires first
        registry.observe_store(
            evicted=store.evicted, evicted_for_bytes=store.evicted_for_bytes, bytes_held=store.bytes_held
        )
    return Response(
        registry.render(conversation_counts=conversation_counts),
        media_type="text/plain; version=0.0.4; charset=utf-8",
    )


@router.get(
    "/model",
    response_model=ModelResponse,
    summary="The served model: labels, encoders, context",
    responses={401: {"model": Problem, "content": {"application/problem+json": {}}}},
)
async def model_info(engine: EngineDep, _namespace: NamespaceDep) -> ModelResponse:
    return ModelResponse.model_validate(engine.describe())
