"""Dashboard statistics, cached briefly in Redis."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request, Response
from psycopg_pool import PoolTimeout

from payflow.app import repository
from payflow.app.api.routing import request_only
from payflow.app.models import ERROR_RESPONSES
from payflow.app.services import Services
from payflow.app.views import format_amount

router = APIRouter(prefix="/api/stats", tags=["stats"], responses=ERROR_RESPONSES)


def build_stats(rows: list[dict[str, Any]], windows: list[dict[str, Any]], replica: str) -> dict[str, Any]:
    by_status: dict[str, int] = {}
    by_currency: dict[str, dict[str, Any]] = {}
    total = 0
    last_minute = 0
    for r in rows:
        currency = r["currency"].strip()
        total += r["count"]
        last_minute += r["last_minute"]
        by_status[r["status"]] = by_status.get(r["status"], 0) + r["count"]
        entry = by_currency.setdefault(currency, {"count": 0, "by_status": {}})
        entry["count"] += r["count"]
        entry["by_status"][r["status"]] = {
            "count": r["count"],
            "volume": format_amount(r["volume"], currency),
        }
    return {
        "generated_at": datetime.now(UTC).isoformat(),
        "transactions": {
            "total": total,
            "last_minute": last_minute,
            "by_status": by_status,
            "by_currency": by_currency,
        },
        "requests": {"replica": replica, "windows": windows},
    }


@request_only(
    router,
    "",
    methods=["GET"],
    summary="Counts and volumes by status and currency; request rate, error ratio, latency",
)
async def stats(request: Request) -> Response:
    """Served from this replica's copy while it is fresh, else from Redis (shared by the
    replicas), else computed from PostgreSQL by one request at a time (no stampede). While one
    request refreshes the copy, the others get the expired copy if it expired less than
    ``stats_ttl_s`` ago (``X-Cache: stale``) rather than queue behind a query that grows with
    the table.

    A request-only route (no dependency resolution): this endpoint is polled by dashboards, and
    FastAPI's per-request handling was most of its cost."""
    services: Services = request.app.state.services
    local = services.stats_cache
    body = local.fresh()
    if body is not None:
        return Response(body, media_type="application/json", headers={"X-Cache": "local"})
    settings = services.settings
    if local.lock.locked() and (body := local.stale(settings.stats_ttl_s)) is not None:
        return Response(body, media_type="application/json", headers={"X-Cache": "stale"})
    # One deadline for the queue and the pool: waiters queue behind the computing request, and
    # when PostgreSQL is away each would otherwise wait the full pool timeout in turn.
    deadline = time.monotonic() + settings.db_pool_timeout_s
    try:
        async with asyncio.timeout(settings.db_pool_timeout_s):
            await local.lock.acquire()
    except TimeoutError:
        raise PoolTimeout("the statistics are being computed by another request") from None
    try:
        body = local.fresh()
        if body is not None:
            return Response(body, media_type="application/json", headers={"X-Cache": "local"})
        key = f"payflow:{settings.release}:stats:v1"
        body = await services.redis.get(key)
        source = "hit"
        if body is None:
            source = "miss"
            async with services.pool.connection(timeout=max(0.0, deadline - time.monotonic())) as conn:
                rows = await repository.transaction_totals(conn)
            windows = [asdict(w) for w in services.window.stats()]
            body = json.dumps(build_stats(rows, windows, settings.replica), separators=(",", ":")).encode()
            await services.redis.set(key, body, settings.stats_ttl_s)
        local.store(body, min(settings.stats_local_ttl_s, settings.stats_ttl_s))
    finally:
        local.lock.release()
    return Response(body, media_type="application/json", headers={"X-Cache": source})
