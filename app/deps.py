"""Accessors for the objects the lifespan puts on `app.state`, as `Annotated[..., Depends()]` aliases.

They are `async def` although they never await: FastAPI runs a plain `def` dependency in its thread
pool, a hand-off to another thread and back per dependency and request (three per POST), which on a
busy machine costs a scheduler wake-up each for a function that reads an attribute.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.engine import Engine
from app.exceptions import ServiceNotReady
from app.lifecycle import Lifecycle
from app.metrics import Metrics
from app.security import ApiKeys
from app.settings import Settings
from app.store import ConversationStore


@dataclass
class Services:
    """Everything a request may need; `store` and `engine` exist once the lifespan has built them."""

    settings: Settings
    metrics: Metrics
    api_keys: ApiKeys
    lifecycle: Lifecycle
    store: ConversationStore | None = None
    engine: Engine | None = None


async def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


async def get_settings(services: ServicesDep) -> Settings:
    return services.settings


async def get_metrics(services: ServicesDep) -> Metrics:
    return services.metrics


async def get_store(services: ServicesDep) -> ConversationStore:
    if services.store is None:
        raise ServiceNotReady("the service is starting")
    return services.store


async def get_engine(services: ServicesDep) -> Engine:
    if services.engine is None:
        raise ServiceNotReady("the model is not loaded yet")
    return services.engine


_bearer = HTTPBearer(auto_error=False, description="An API key, when the service is configured with keys.")


async def get_namespace(
    services: ServicesDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    return services.api_keys.namespace_for(credentials.credentials if credentials else None)


SettingsDep = Annotated[Settings, Depends(get_settings)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
StoreDep = Annotated[ConversationStore, Depends(get_store)]
EngineDep = Annotated[Engine, Depends(get_engine)]
NamespaceDep = Annotated[str, Depends(get_namespace)]

__all__ = [
    "EngineDep",
    "MetricsDep",
    "NamespaceDep",
    "Services",
    "ServicesDep",
    "SettingsDep",
    "StoreDep",
    "get_services",
]
