"""Fixtures of the fuzzing suite: the app as a real process (faults off) and the operator as a
real subprocess, both borrowed from the integration suites; the example budget from the
environment, so `make test` stays quick and `make fuzz` goes deeper."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.integration.app.conftest import AppServer, StartApp, start_app  # noqa: F401
from tests.integration.operator.conftest import (  # noqa: F401
    cluster,
    crd,
    operator,
    operator_factory,
    release,
)

# Examples per API operation and generation mode (schemathesis), incidents through the operator
# and incident specs by server-side dry run (hypothesis).
DEFAULT_API_EXAMPLES = 15
DEFAULT_INCIDENT_EXAMPLES = 25
DEFAULT_SCHEMA_EXAMPLES = 100  # server-side dry runs: cheap


def budget(variable: str, default: int) -> int:
    """A positive example count from ``variable``, else ``default``."""
    raw = os.environ.get(variable, "")
    try:
        value = int(raw) if raw else default
    except ValueError:
        raise pytest.UsageError(f"{variable} must be a positive integer, got {raw!r}") from None
    if value < 1:
        raise pytest.UsageError(f"{variable} must be a positive integer, got {raw!r}")
    return value


def write_report(key: str, report: dict[str, Any]) -> None:
    """Add ``report`` under ``key`` to the JSON file named by PAYFLOW_FUZZ_REPORT (if set)."""
    if not (name := os.environ.get("PAYFLOW_FUZZ_REPORT")):
        return
    path = Path(name)
    existing: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    existing[key] = report
    path.write_text(json.dumps(existing, indent=2, sort_keys=True) + "\n")


@pytest.fixture
def app_server(start_app: StartApp) -> AppServer:  # noqa: F811
    """One payflow-app on a free loopback port, real PostgreSQL and Redis, every fault off."""
    return start_app({"PAYFLOW_LOG_LEVEL": "WARNING"})
