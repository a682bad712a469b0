"""Incidents act on real pods: on the local node, or on the cluster PAYFLOW_E2E_KUBECONFIG names
(PAYFLOW_E2E_NAMESPACE, default demo, and PAYFLOW_E2E_RELEASE, default payflow, say where the
chart is installed there).
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from payflow import naming
from tests.e2e.conftest import NS, RELEASE, Cluster
from tests.support import wait_for

Kubectl = Callable[..., str]


@pytest.fixture(scope="module")
def k(e2e_kubeconfig: Path) -> Kubectl:
    def run(*args: str, input: str | None = None) -> str:
        proc = subprocess.run(
            ["kubectl", "--kubeconfig", str(e2e_kubeconfig), "-n", NS, *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)}: {proc.stderr}")
        return proc.stdout

    return run


def app_config(k: Kubectl) -> dict[str, Any]:
    """GET /api/config of the app through the API server's service proxy (no port-forward)."""
    return dict(
        json.loads(k("get", "--raw", f"/api/v1/namespaces/{NS}/services/{RELEASE}:80/proxy/api/config"))
    )


@pytest.fixture
def incident(k: Kubectl, cluster: Cluster) -> Iterator[Callable[[str, str], str]]:
    made: list[str] = []

    def apply(faults: str, delivery: str = "live") -> str:
        name = cluster.apply_incident(f"e2e-{uuid.uuid4().hex[:8]}", faults, delivery)
        made.append(name)
        return name

    yield apply
    for name in made:
        k("delete", "pfi", name, "--ignore-not-found", "--wait=true", "--timeout=120s")


def test_a_live_incident_reaches_every_pod_and_clears(
    k: Kubectl, incident: Callable[[str, str], str]
) -> None:
    name = incident("{latency: {delayMs: 150}}", "live")

    def active_row() -> list[str] | None:
        row = k("get", "pfi", name, "--no-headers").split()
        return row if len(row) > 4 and row[4] == "Active" else None

    row = wait_for(active_row, timeout=30, what="the incident Active")
    assert row[:4] == [name, RELEASE, "latency", "live"]
    latency = wait_for(
        lambda: (f := app_config(k)["faults"]["latency"])["active"] and f,
        timeout=10,
        what="latency in the app",
    )
    assert latency["params"]["delayMs"] == 150
    assert [i["incident"] for i in latency["incidents"]] == [name]
    k("delete", "pfi", name, "--wait=true", "--timeout=60s")
    wait_for(lambda: not app_config(k)["faults"]["latency"]["active"], timeout=10, what="latency cleared")


def test_the_caching_incident_ends_in_oomkilled_pods_and_rolls_back(
    k: Kubectl, incident: Callable[[str, str], str]
) -> None:
    before = {
        rs["metadata"]["name"]
        for rs in json.loads(k("get", "rs", "-l", naming.app_selector(RELEASE), "-o", "json"))["items"]
    }
    name = incident("{oom: {growthKiBPerRequest: 4096, floorKiBPerSecond: 65536}}", "rollout")

    def oomkilled() -> bool:
        pods = json.loads(k("get", "pods", "-l", naming.app_selector(RELEASE), "-o", "json"))["items"]
        return any(
            (cs.get("lastState", {}).get("terminated") or {}).get("reason") == "OOMKilled"
            for p in pods
            for cs in p["status"].get("containerStatuses", [])
        )

    wait_for(oomkilled, timeout=300, what="an app container OOMKilled")
    after = {
        rs["metadata"]["name"]
        for rs in json.loads(k("get", "rs", "-l", naming.app_selector(RELEASE), "-o", "json"))["items"]
    }
    assert after - before, "the rollout made a new ReplicaSet"
    k("delete", "pfi", name, "--wait=true", "--timeout=120s")
    k("rollout", "status", f"deployment/{RELEASE}", "--timeout=300s")
    assert not app_config(k)["faults"]["oom"]["active"]
