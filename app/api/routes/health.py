"""Probes and metrics: /health (liveness), /ready (readiness), /metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from psycopg_pool import PoolTimeout

from payflow.app.api.deps import ServicesDep
from payflow.app.api.routing import request_only

router = APIRouter(tags=["probes"])

_HEALTH = b'{"status":"ok"}'


@request_only(router, "/health", methods=["GET"], summary="Liveness: the process answers")
async def health(request: Request) -> Response:
    return Response(_HEALTH, media_type="application/json")


@router.get("/ready", summary="Readiness: PostgreSQL reachable and the pool not exhausted; Redis optional")
async def ready(services: ServicesDep) -> JSONResponse:
    pool = services.pool
    stats = pool.get_stats()
    checks: dict[str, Any] = {}
    db_ok = True
    try:
        async with pool.connection(timeout=1.0) as conn:
            await conn.execute("SELECT 1")
        checks["database"] = {"ok": True}
    except PoolTimeout:
        db_ok = False
        checks["database"] = {
            "ok": False,
            "reason": f"connection pool exhausted: {stats.get('pool_size', 0)} of {pool.max_size} "
            f"connections in use, {stats.get('requests_waiting', 0)} requests waiting",
        }
    except Exception as exc:
        db_ok = False
        checks["database"] = {"ok": False, "reason": f"{type(exc).__name__}: {exc}"}
    redis_reason = await services.redis.ping()
    checks["redis"] = {"ok": redis_reason is None} | ({"reason": redis_reason} if redis_reason else {})
    checks["pool"] = {
        "size": stats.get("pool_size", 0),
        "available": stats.get("pool_available", 0),
        "waiting": stats.get("requests_waiting", 0),
        "max": pool.max_size,
    }
    status = "ready" if db_ok and redis_reason is None else ("degraded" if db_ok else "unavailable")
    return JSONResponse({"status": status, "checks": checks}, status_code=200 if db_ok else 503)


@router.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse)
async def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
