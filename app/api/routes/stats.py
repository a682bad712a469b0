"""Dashboard statistics, cached briefly in Redis."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Response

from payflow.app import repository
from payflow.app.api.deps import ServicesDep
from payflow.app.models import ERROR_RESPONSES
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


@router.get("", summary="Counts and volumes by status and currency; request rate, error ratio, latency")
async def stats(services: ServicesDep) -> Response:
    key = f"payflow:{services.settings.release}:stats:v1"
    cached = await services.redis.get(key)
    if cached is not None:
        return Response(cached, media_type="application/json", headers={"X-Cache": "hit"})
    async with services.pool.connection() as conn:
        rows = await repository.transaction_totals(conn)
    windows = [asdict(w) for w in services.window.stats()]
    body = json.dumps(build_stats(rows, windows, services.settings.replica), separators=(",", ":")).encode()
    await services.redis.set(key, body, services.settings.stats_ttl_s)
    return Response(body, media_type="application/json", headers={"X-Cache": "miss"})
