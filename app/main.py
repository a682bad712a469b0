"""The app factory and the ``payflow-app`` console script."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from fastapi import FastAPI
from psycopg_pool import AsyncConnectionPool

from payflow import __version__
from payflow.app import errors, logs, metrics
from payflow.app.api.routes import config, dashboard, faults, health, series, stats, transactions
from payflow.app.api.routing import HotPath
from payflow.app.cache import RedisCache, ResponseCache
from payflow.app.faults.cluster import ClusterReader
from payflow.app.faults.controller import FaultController
from payflow.app.faults.injectors import (
    ConnectionHolder,
    CpuBurner,
    MemoryLeak,
    Ticker,
    cgroup_memory_limit,
)
from payflow.app.faults.watcher import ConfigMapWatcher, make_api_client
from payflow.app.middleware import RequestMiddleware
from payflow.app.migrations import migrate
from payflow.app.series_store import SeriesStore
from payflow.app.services import Services
from payflow.app.settings import Settings, get_settings
from payflow.app.window import RequestWindow
from payflow.app.writer import TransactionWriter

log = logging.getLogger("payflow.app")
# How long psycopg_pool keeps retrying one lost connection before it gives that retry chain up.
DB_RECONNECT_WINDOW_S = 2.0

# Plain routers (only APIRoutes, no router-level dependencies): see create_app.
FLAT = (health, transactions, stats, config, faults)


async def run_migrations(database_url: str, deadline_s: float = 60.0) -> list[int]:
    """Apply the migrations, waiting for the database up to ``deadline_s``."""
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            async with await psycopg.AsyncConnection.connect(
                database_url, autocommit=True, connect_timeout=5
            ) as conn:
                return await migrate(conn)
        except psycopg.OperationalError as exc:
            if time.monotonic() > deadline:
                raise
            log.warning("database not reachable yet (%s); retrying", exc)
            await asyncio.sleep(1)


def _pool_gauges(pool: AsyncConnectionPool[Any]) -> None:
    metrics.POOL_MAX.set(pool.max_size)
    metrics.POOL_SIZE.set_function(lambda: pool.get_stats().get("pool_size", 0))
    metrics.POOL_IN_USE.set_function(
        lambda: (s := pool.get_stats()).get("pool_size", 0) - s.get("pool_available", 0)
    )
    metrics.POOL_WAITING.set_function(lambda: pool.get_stats().get("requests_waiting", 0))


def create_app(settings: Settings | None = None) -> FastAPI:
    """The ASGI app. ``settings`` defaults to :func:`get_settings` (read at start-up)."""
    holder: dict[str, Services] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        s = settings or get_settings()
        applied = await run_migrations(s.database_url)
        log.info("schema ready", extra={"migrations_applied": applied})
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            s.database_url,
            min_size=min(s.db_pool_min, s.db_pool_max),
            max_size=s.db_pool_max,
            timeout=s.db_pool_timeout_s,
            # psycopg_pool retries a lost connection with an uncapped exponential back-off (1, 2,
            # 4, 8 s...), so after a 10 s outage its next try could come 5 s after the database's
            # return. Giving a retry chain up after 2 s lets the next waiting request start a fresh
            # one at once: while requests wait, a try happens at least every 2 s.
            reconnect_timeout=DB_RECONNECT_WINDOW_S,
            open=False,
            name="payflow",
            kwargs={
                "autocommit": True,
                "connect_timeout": int(s.db_connect_timeout_s),
                "application_name": f"payflow-app/{s.replica}",
                "options": f"-c statement_timeout={s.db_statement_timeout_ms}",
            },
        )
        await pool.open(wait=True, timeout=30)
        _pool_gauges(pool)
        responses = ResponseCache(s.response_cache_entries)
        metrics.CACHE_ENTRIES.labels("response").set_function(lambda: responses.entries)
        metrics.CACHE_BYTES.labels("response").set_function(lambda: responses.total_bytes)
        leak = MemoryLeak(responses, s.oom_ceiling_mb << 20, cgroup_memory_limit(s.oom_cgroup_dir))
        api_client = make_api_client(s.kubeconfig) if s.watch_faults else None
        controller = FaultController(
            database_url=s.database_url,
            replica=s.replica,
            release=s.release,
            leak=leak,
            burner=CpuBurner(),
            holder=ConnectionHolder(pool),
            pod=s.pod_name,
            cluster=None if api_client is None else ClusterReader(api_client, s.namespace),
            configmap=s.faults_configmap,
            container=s.container_name,
            crash_timeout_s=s.crash_record_timeout_s,
            gone_check_s=s.gone_check_s,
        )
        redis = RedisCache(s.redis_url, s.redis_timeout_s, s.redis_retry_after_s)
        services = Services(
            settings=s,
            pool=pool,
            redis=redis,
            responses=responses,
            leak=leak,
            faults=controller,
            window=RequestWindow(),
            writer=TransactionWriter(pool),
        )
        series_store = SeriesStore(
            services.window.series, s.redis_url, s.release, s.redis_timeout_s, s.redis_retry_after_s
        )
        series_store.start()
        app.state.series = series_store
        await controller.start(s.fault_env)
        ticker = Ticker(controller.active, leak)
        ticker.start()
        if s.watch_faults:
            if api_client is None:
                log.warning("no kubeconfig and not in a cluster: faults come from the environment only")
            else:
                services.watcher = ConfigMapWatcher(
                    api_client,
                    s.namespace,
                    s.faults_configmap,
                    controller.on_configmap_threadsafe,
                    s.watch_timeout_s,
                )
                services.watcher.start()
        app.state.services = services
        holder["services"] = services
        # What start-up built (modules, schemas, routes, clients) lives as long as the process:
        # out of the collector's sight, so that its full collections, which walk every tracked
        # object, stop costing tens of milliseconds of latency under load.
        gc.collect()
        gc.freeze()
        log.info(
            "payflow app started",
            extra={
                "release": s.release,
                "namespace": s.namespace,
                "faults": list(controller.state.faults.names),
                "memory_ceiling_mb": leak.ceiling >> 20,
                "cgroup_memory_limit": leak.cgroup_limit,
            },
        )
        try:
            yield
        finally:
            if services.watcher is not None:
                services.watcher.stop()
            await ticker.stop()
            await controller.stop()
            await series_store.stop()
            await redis.close()
            await pool.close()
            holder.pop("services", None)

    app = FastAPI(
        title="PayFlow payment API",
        version=__version__,
        description="Payments on PostgreSQL with a Redis cache, and six injectable faults. See docs/api.md.",
        lifespan=lifespan,
        # No OpenTelemetry here (metrics are Prometheus, logs are JSON lines): without this, FastAPI
        # looks the providers up on every request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    errors.install(app)
    modules = (health, transactions, stats, series, config, faults, dashboard)
    routes = tuple(route for module in modules for route in module.router.routes)
    # The last added is the outermost: RequestMiddleware sees every request, the hot path's too.
    app.add_middleware(HotPath, routes=routes, exception_handlers=lambda: app.exception_handlers)
    app.add_middleware(RequestMiddleware, services=lambda: holder.get("services"), routes=lambda: routes)
    for module in modules:
        if module in FLAT:
            # Their routes carry prefix, tags and responses already: added directly, a request is
            # matched once instead of once per included router (about 20 us less per request).
            app.router.routes.extend(module.router.routes)
        else:
            app.include_router(module.router)
    return app


def _parser() -> argparse.ArgumentParser:
    fields = Settings.model_fields
    return argparse.ArgumentParser(
        prog="payflow-app",
        description="The PayFlow payment API: serves on PAYFLOW_HOST:PAYFLOW_PORT "
        f"(default {fields['host'].default}:{fields['port'].default}).",
        epilog="Settings come from the environment: DATABASE_URL, REDIS_URL, KUBECONFIG, PAYFLOW_* and "
        "the INJECT_* fault keys (docs/api.md lists them).",
    )


def run(argv: Sequence[str] | None = None) -> None:
    """``payflow-app``: serve the API with uvicorn on PAYFLOW_HOST:PAYFLOW_PORT."""
    import uvicorn  # before the arguments: --help then also shows that the server is installed

    _parser().parse_args(argv)
    settings = get_settings()
    logs.configure(settings.log_level)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=10,
    )


if __name__ == "__main__":
    run()
