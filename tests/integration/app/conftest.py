"""Fixtures of the app's integration tests: the app as a real uvicorn process on a free
loopback port, or in-process behind httpx's ASGI transport."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from payflow.app.main import create_app
from payflow.app.settings import Settings
from payflow.devstack.process import Process, free_port


@dataclass
class AppServer:
    """One ``payflow-app`` process."""

    process: Process
    url: str
    release: str
    client: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.client = httpx.Client(base_url=self.url, timeout=30)

    @property
    def log(self) -> str:
        return self.process.log_path.read_text(errors="replace")

    def wait_exit(self, timeout: float) -> int:
        assert self.process.popen is not None
        return self.process.popen.wait(timeout=timeout)

    def stop(self) -> None:
        self.client.close()
        self.process.stop(timeout=5)


StartApp = Callable[..., AppServer]


@pytest.fixture
def start_app(postgres_url: str, redis_url: str, tmp_path: Path) -> Iterator[StartApp]:
    """Start ``payflow-app`` with extra environment; every app started is stopped at the end."""
    servers: list[AppServer] = []

    def start(env: dict[str, str] | None = None, *, wait: bool = True, **kw: str) -> AppServer:
        port = free_port()
        release = kw.pop("release", f"r{uuid.uuid4().hex[:8]}")
        full = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/tmp"),
            "DATABASE_URL": postgres_url,
            "REDIS_URL": redis_url,
            "PAYFLOW_HOST": "127.0.0.1",
            "PAYFLOW_PORT": str(port),
            "PAYFLOW_RELEASE": release,
            "PAYFLOW_WATCH_FAULTS": "false",
            "PAYFLOW_LOG_LEVEL": "INFO",
            "PAYFLOW_OOM_CGROUP_DIR": str(tmp_path / "no-cgroup"),
            **(env or {}),
        }
        name = f"app-{len(servers)}"
        proc = Process(name, [sys.executable, "-m", "payflow.app.main"], tmp_path / f"{name}.log", env=full)
        server = AppServer(proc, f"http://127.0.0.1:{port}", release)
        servers.append(server)
        proc.start()
        if wait:
            proc.wait_ready(
                lambda: httpx.get(f"{server.url}/health", timeout=1).status_code == 200, timeout=60
            )
        return server

    yield start
    for s in servers:
        s.stop()


def in_process_settings(postgres_url: str, redis_url: str, **overrides: Any) -> Settings:
    """Settings of an in-process app: its own release (so its own cache keys), no ConfigMap
    watch, no fault."""
    fields: dict[str, Any] = {
        "database_url": postgres_url,
        "redis_url": redis_url,
        "release": f"r{uuid.uuid4().hex[:8]}",
        "watch_faults": False,
        "fault_env": {},
    }
    return Settings(**{**fields, **overrides})


@pytest.fixture
async def asgi_client(postgres_url: str, redis_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """The app in-process (lifespan included) behind httpx's ASGI transport."""
    app = create_app(in_process_settings(postgres_url, redis_url))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://payflow.test") as client:
            yield client
