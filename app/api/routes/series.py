"""The request time series behind the dashboard's charts."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from payflow.app import series
from payflow.app.errors import ApiError
from payflow.app.models import ERROR_RESPONSES
from payflow.app.series_store import SeriesStore
from payflow.app.services import Services

router = APIRouter(prefix="/api/stats", tags=["stats"], responses=ERROR_RESPONSES)


@router.get(
    "/series",
    summary="Request rate, 5xx ratio and p50/p95 latency per time bucket (all replicas, from Redis)",
)
async def stats_series(
    request: Request,
    minutes: Annotated[int, Query(ge=1, le=series.HORIZON_S // 60, description="How far back.")] = 15,
    step: Annotated[
        int, Query(ge=series.BASE_STEP_S, le=3600, description="Bucket width in seconds, a multiple of 5.")
    ] = series.BASE_STEP_S,
) -> Response:
    """Points oldest first, one per ``step`` even without traffic (``rate_per_s`` 0, the others
    null). ``source`` is ``redis`` (every replica's requests) or ``memory`` (Redis unreachable:
    this process's requests since it started)."""
    reason = series.validate_query(minutes, step)
    if reason:
        raise ApiError(400, "invalid_filter", reason)
    services: Services = request.app.state.services
    store: SeriesStore = request.app.state.series
    now = time.time()
    buckets, source = await store.buckets(now - minutes * 60 - step, now)
    body = {
        "generated_at": datetime.fromtimestamp(now, UTC).isoformat(),
        "minutes": minutes,
        "step": step,
        "source": source,
        "replica": services.settings.replica,
        "process_started_at": datetime.fromtimestamp(services.started_at, UTC).isoformat(),
        "points": [p.to_dict() for p in series.series(buckets, now, minutes, step)],
    }
    return Response(
        json.dumps(body, separators=(",", ":")).encode(),
        media_type="application/json",
        headers={"Cache-Control": "no-store"},
    )
