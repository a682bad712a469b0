"""The chart's Redis asks for the password of its Secret, and the app's REDIS_URL carries it.

No kubelet runs here, so this test does what one would with the rendered chart: it builds the
Redis container's environment from the Secret, expands ``$(VAR)`` in its args, and runs that
command with Debian's redis-server (on a loopback port, in a throwaway directory). Then the
readiness probe's ``redis-cli ping`` and the app's REDIS_URL are tried with and without the
password."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis

from payflow.devstack import tools
from payflow.devstack.process import Process, free_port
from tests.unit.helm.chart import Manifest, container_env, expand, of_component, render


def _cli(argv: list[str], env: dict[str, str]) -> str:
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=10)
    return (proc.stdout + proc.stderr).strip()


@pytest.fixture
def manifests() -> list[Manifest]:
    return render()


@pytest.fixture
def chart_redis(manifests: list[Manifest], tmp_path: Path) -> Any:
    """The chart's Redis container, run as the kubelet would (port and directory are ours)."""
    container = of_component(manifests, "Deployment", "redis")["spec"]["template"]["spec"]["containers"][0]
    env = container_env(container, manifests)
    args = [expand(a, env) for a in container["args"]]
    assert args[0] == "redis-server"
    port = free_port()
    ours = ["--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp_path)]
    proc = Process(
        "chart-redis",
        [str(tools.redis_server()), *args[1:], *ours],
        tmp_path / "redis.log",
        cwd=tmp_path,
    )
    proc.start()
    try:
        proc.wait_ready(lambda: "NOAUTH" in _cli(["redis-cli", "-p", str(port), "ping"], {}), timeout=20)
        yield container, env, port, proc
    finally:
        proc.stop()


def test_the_charts_redis_wants_the_password_the_app_is_given(
    manifests: list[Manifest], chart_redis: Any
) -> None:
    container, env, port, proc = chart_redis
    password = env["REDIS_PASSWORD"]
    assert len(password) >= 32

    # The readiness probe, with the container's environment: PONG. Without it: refused.
    cli, *command = container["readinessProbe"]["exec"]["command"]
    probe = [cli, "-p", str(port), *command]
    assert _cli(probe, {"REDISCLI_AUTH": env["REDISCLI_AUTH"]}) == "PONG"
    assert "NOAUTH" in _cli(probe, {})

    # The app's REDIS_URL points at the Service, with the password.
    app = of_component(manifests, "Deployment", "api")["spec"]["template"]["spec"]["containers"][0]
    url = urlsplit(container_env(app, manifests)["REDIS_URL"])
    service = of_component(manifests, "Service", "redis")
    assert (url.hostname, url.port) == (service["metadata"]["name"], service["spec"]["ports"][0]["port"])
    assert url.password == password
    local = urlunsplit(url._replace(netloc=f":{url.password}@127.0.0.1:{port}"))
    with redis.Redis.from_url(local, socket_timeout=5) as client:
        assert client.ping() is True
    with (
        redis.Redis.from_url(f"redis://127.0.0.1:{port}/0", socket_timeout=5) as anonymous,
        pytest.raises(redis.AuthenticationError),
    ):
        anonymous.get("anything")

    # The password is not left readable in the process list.
    assert proc.pid is not None
    assert password not in Path(f"/proc/{proc.pid}/cmdline").read_bytes().decode(errors="replace")
