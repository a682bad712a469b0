"""The app's settings: one pydantic-settings class, read once through :func:`get_settings`.

The ``INJECT_*`` fault keys are not fields: they are collected as they are and parsed only by
:meth:`payflow.faults.FaultSet.from_env`, the single source of the fault vocabulary.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from payflow.faults import ENV_PREFIX
from payflow.naming import faults_configmap_name

NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def _default_namespace() -> str:
    try:
        return NAMESPACE_FILE.read_text().strip() or "default"
    except OSError:
        return "default"


def _fault_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith(ENV_PREFIX)}


def redact_url(url: str) -> str:
    """``url`` without its password (``postgresql://user:***@host/db``)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable>"
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, f"{user}:***@{host}", parts.path, parts.query, parts.fragment))


class Settings(BaseSettings):
    """Every setting of the app, from the environment (names in ``validation_alias``)."""

    model_config = SettingsConfigDict(env_prefix="PAYFLOW_", extra="ignore", populate_by_name=True)

    database_url: str = Field(
        default="postgresql://postgres@127.0.0.1:5432/payflow", validation_alias=AliasChoices("DATABASE_URL")
    )
    redis_url: str = Field(default="redis://127.0.0.1:6379/0", validation_alias=AliasChoices("REDIS_URL"))
    release: str = Field(
        default="payflow", description="The Helm release: the faults ConfigMap is <release>-faults."
    )
    namespace: str = Field(default_factory=_default_namespace)
    kubeconfig: str | None = Field(default=None, validation_alias=AliasChoices("KUBECONFIG"))
    watch_faults: bool = True
    host: str = Field(
        default="127.0.0.1",
        description="Listen address: loopback by default; the chart sets 0.0.0.0 (a pod's own interfaces).",
    )
    port: int = Field(default=8080, ge=0, le=65535)
    log_level: str = "INFO"
    replica: str = Field(default_factory=lambda: os.environ.get("HOSTNAME") or os.uname().nodename)
    pod_name: str | None = Field(
        default=None,
        validation_alias=AliasChoices("PAYFLOW_POD_NAME", "POD_NAME"),
        description="This pod (the downward API's metadata.name): its container status is read at start.",
    )
    container_name: str = Field(default="app", description="This container's name in the pod.")
    crash_record_timeout_s: float = Field(
        default=1.0, gt=0, le=10, description="Longest wait for the crash row before a crashing process ends."
    )
    gone_check_s: float = Field(
        default=30.0,
        gt=0,
        description="How often the pods of other replicas with open fault intervals are looked up.",
    )
    restart_count: int | None = Field(
        default=None, ge=0, description="Restarts before this process, when a supervisor says (local demo)."
    )

    # PostgreSQL pool
    db_pool_min: int = Field(default=2, ge=0, le=100)
    db_pool_max: int = Field(default=10, ge=1, le=200)
    db_pool_timeout_s: float = Field(
        default=5.0, gt=0, le=300, description="Longest wait for a pool connection."
    )
    db_statement_timeout_ms: int = Field(default=10000, ge=0, description="PostgreSQL statement_timeout.")
    db_connect_timeout_s: float = Field(default=5.0, gt=0)

    # Redis cache
    redis_timeout_s: float = Field(default=0.25, gt=0, description="Socket timeout of every Redis call.")
    redis_retry_after_s: float = Field(
        default=2.0, ge=0, description="How long the cache skips Redis after a failure."
    )
    stats_ttl_s: float = Field(default=2.0, gt=0, description="How long GET /api/stats is cached in Redis.")
    stats_local_ttl_s: float = Field(
        default=0.5,
        ge=0,
        description="How long a replica reuses its own copy of /api/stats before asking Redis.",
    )
    lookup_ttl_s: int = Field(
        default=60, ge=1, description="How long a looked-up transaction is cached in Redis."
    )
    response_cache_entries: int = Field(default=1024, ge=1, description="In-process cache of recent lookups.")

    max_body_bytes: int = Field(default=16384, ge=256, description="Largest request body accepted.")

    # Fault injection
    oom_ceiling_mb: int = Field(
        default=256, ge=32, description="Safe memory ceiling of the OOM fault without a cgroup limit."
    )
    oom_cgroup_dir: str = Field(
        default="/sys/fs/cgroup", description="Where the cgroup memory limit is read."
    )
    watch_timeout_s: int = Field(
        default=240, ge=1, description="Server-side timeout of one ConfigMap watch request."
    )

    fault_env: dict[str, str] = Field(
        default_factory=_fault_env,
        validation_alias=AliasChoices("PAYFLOW_FAULT_ENV_JSON"),
        description="The INJECT_* variables as given; parsed by payflow.faults.FaultSet.from_env.",
    )

    @property
    def faults_configmap(self) -> str:
        return faults_configmap_name(self.release)

    def public(self) -> dict[str, object]:
        """The settings without a secret in them (for GET /api/config)."""
        data = self.model_dump(exclude={"fault_env", "kubeconfig"})
        data["database_url"] = redact_url(self.database_url)
        data["redis_url"] = redact_url(self.redis_url)
        data["faults_configmap"] = self.faults_configmap
        return data


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
