"""The operator's settings, from the environment (``PAYFLOW_*``) and the command line."""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class OperatorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PAYFLOW_", extra="ignore")

    watch_namespaces: Annotated[
        str, Field(description="Comma-separated namespaces to watch; empty: every namespace (cluster-wide).")
    ] = ""
    operator_host: Annotated[
        str,
        Field(description="Address of /healthz and /metrics; the chart sets 0.0.0.0 (the pod's interfaces)."),
    ] = "127.0.0.1"
    operator_port: Annotated[int, Field(ge=0, le=65535, description="Port of /healthz and /metrics.")] = 8080
    pending_recheck_seconds: Annotated[
        float,
        Field(gt=0, description="How often a Pending incident's target is looked for again (also watched)."),
    ] = 5.0
    resync_seconds: Annotated[
        float, Field(gt=0, description="How often a target is reconciled without a trigger.")
    ] = 300.0
    log_level: Annotated[str, Field(description="Python log level of the operator.")] = "INFO"

    @property
    def namespaces(self) -> tuple[str, ...]:
        return tuple(n.strip() for n in self.watch_namespaces.split(",") if n.strip())


@lru_cache
def get_settings() -> OperatorSettings:
    return OperatorSettings()
