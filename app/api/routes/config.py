"""The configuration in force: faults with their source and since when, and no secret."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from payflow.app.api.deps import ServicesDep
from payflow.app.faults.state import describe

router = APIRouter(prefix="/api/config", tags=["config"])


@router.get("", summary="Faults in force (source, since, incidents), the last rejected change, settings")
async def config(services: ServicesDep) -> dict[str, Any]:
    settings = services.settings
    watcher = services.watcher
    return {
        "release": settings.release,
        "namespace": settings.namespace,
        "replica": settings.replica,
        "configmap": {
            "name": settings.faults_configmap,
            "watching": watcher is not None,
            "connected": bool(watcher and watcher.connected),
            "last_error": watcher.last_error if watcher else None,
        },
        **describe(services.faults.state),
        "settings": settings.public(),
    }
