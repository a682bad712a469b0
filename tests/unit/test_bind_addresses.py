"""On a host, nothing PayFlow starts listens beyond loopback; in a pod, the chart asks for all of
the pod's interfaces, explicitly, for every server it runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from payflow.app.settings import Settings
from payflow.devstack.process import free_port
from payflow.loadgen.cli import parse_args
from payflow.operator.settings import OperatorSettings
from tests.support import wait_for
from tests.unit.helm.chart import ALL_OPTIONS, container_env, of_component, render

LOOPBACK = "127.0.0.1"
POD = "0.0.0.0"  # noqa: S104 - what the chart asks for, inside a pod


def test_the_code_defaults_to_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PAYFLOW_HOST", raising=False)
    monkeypatch.delenv("PAYFLOW_OPERATOR_HOST", raising=False)
    assert Settings().host == LOOPBACK
    assert OperatorSettings().operator_host == LOOPBACK
    assert parse_args(["--target", "http://127.0.0.1:8080"]).metrics_host == LOOPBACK


def test_the_chart_binds_every_server_to_the_pods_interfaces() -> None:
    everything = render(values=ALL_OPTIONS)
    app = of_component(everything, "Deployment", "api")["spec"]["template"]["spec"]["containers"][0]
    assert container_env(app, everything)["PAYFLOW_HOST"] == POD
    operator = of_component(everything, "Deployment", "operator")["spec"]["template"]["spec"]["containers"][0]
    assert container_env(operator, everything)["PAYFLOW_OPERATOR_HOST"] == POD
    loadgen = of_component(everything, "Deployment", "loadgen")["spec"]["template"]["spec"]["containers"][0]
    command = loadgen["command"]
    assert command[command.index("--metrics-host") + 1] == POD
    assert command[command.index("--metrics-port") + 1] == str(loadgen["ports"][0]["containerPort"])


def listening(port: int) -> set[str]:
    """The local addresses of the sockets listening on TCP ``port`` (IPv4 and IPv6)."""
    found: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, hex_port = fields[1].rsplit(":", 1)
            if fields[3] == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                if len(address) == 8:  # IPv4, little-endian
                    found.add(".".join(str(int(address[i : i + 2], 16)) for i in (6, 4, 2, 0)))
                else:
                    found.add(f"ipv6:{address}")
    return found


def test_the_load_generators_metrics_listen_on_loopback_by_default() -> None:
    port = free_port()
    script = Path(sys.executable).parent / "payflow-loadgen"
    # A target nobody listens on (refused at once), at 1 request/s for at most 20 s.
    argv = [str(script), "--target", f"http://127.0.0.1:{free_port()}", "--rate", "1", "--duration", "20"]
    proc = subprocess.Popen(
        [*argv, "--metrics-port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        addresses = wait_for(
            lambda: listening(port), timeout=20, what=f"payflow-loadgen's /metrics on {port}"
        )
        assert addresses == {LOOPBACK}
    finally:
        proc.terminate()
        proc.wait(timeout=10)
