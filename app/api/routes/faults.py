"""The fault history: the ground truth of when a fault was in force and when it acted."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query

from payflow.app import repository
from payflow.app.api.deps import ConnDep, SettingsDep
from payflow.app.errors import ApiError
from payflow.app.models import ERROR_RESPONSES, FaultHistory, IsoDateTime
from payflow.faults import BY_NAME

router = APIRouter(prefix="/api/faults", tags=["faults"], responses=ERROR_RESPONSES)


@router.get("/history", response_model=FaultHistory, summary="Fault transitions and crashes, newest first")
async def history(
    conn: ConnDep,
    settings: SettingsDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    since: Annotated[IsoDateTime | None, Query(description="Only transitions at or after this time.")] = None,
    fault: Annotated[str | None, Query(description="One fault name of the vocabulary.")] = None,
    release: Annotated[
        str | None,
        Query(
            max_length=53,
            pattern=r"^(\*|[a-z0-9]([-a-z0-9]*[a-z0-9])?)$",
            description="A release name; default: this app's release; '*' for all.",
        ),
    ] = None,
    kind: Annotated[
        Literal["transition", "crash"] | None,
        Query(description="Only transitions (on, off, changed) or only crashes."),
    ] = None,
) -> dict[str, Any]:
    if fault is not None and fault not in BY_NAME:
        raise ApiError(400, "invalid_filter", f"unknown fault {fault!r}; known: {', '.join(BY_NAME)}")
    if since is not None and since.tzinfo is None:
        raise ApiError(400, "invalid_filter", "since needs a time zone (e.g. 2026-01-01T00:00:00Z)")
    wanted: str | None = settings.release if release is None else (None if release == "*" else release)
    rows = await repository.fault_history(
        conn, limit=limit, since=since, fault=fault, release=wanted, kind=kind
    )
    return {"items": rows}
