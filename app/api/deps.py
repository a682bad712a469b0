"""Dependencies of the routes, as Annotated aliases."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import Depends, Request
from psycopg import AsyncConnection

from payflow.app.services import Services
from payflow.app.settings import Settings


async def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


async def get_app_settings(services: ServicesDep) -> Settings:
    return services.settings


SettingsDep = Annotated[Settings, Depends(get_app_settings)]


async def get_conn(services: ServicesDep) -> AsyncIterator[AsyncConnection[Any]]:
    """A pool connection for the request (waits at most db_pool_timeout_s, then 503)."""
    async with services.pool.connection() as conn:
        yield conn


ConnDep = Annotated[AsyncConnection[Any], Depends(get_conn)]
