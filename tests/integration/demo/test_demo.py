"""`make demo`: the chart in the local API server, local processes standing in for its pods,
and incidents acting on them as they would in a cluster."""

from __future__ import annotations

import json
from typing import Any

from tests.integration.demo.conftest import DemoStack
from tests.support import wait_for

ROLLOUT_LATENCY = """
apiVersion: payflow.dev/v1alpha1
kind: PayFlowIncident
metadata: {name: slow-deploy, namespace: demo}
spec:
  target: payflow
  delivery: rollout
  faults: {latency: {delayMs: 50}}
"""

PANIC_EVERY_REQUEST = """
apiVersion: payflow.dev/v1alpha1
kind: PayFlowIncident
metadata: {name: crashy, namespace: demo}
spec:
  target: payflow
  faults: {panic: {probability: 1.0, meanIntervalSeconds: 0}}
"""


def test_the_demo_is_ready_and_says_what_to_do_next(demo: DemoStack) -> None:
    out = demo.up_output
    assert "PayFlow demo ready in" in out
    assert f"dashboard  {demo.app_url}/" in out
    assert "kubectl apply -f examples/incidents/latency.yaml" in out
    status = demo.status
    assert status["phase"] == "ready"
    assert {w: s["state"] for w, s in status["workloads"].items()} == {
        "operator": "running",
        "app": "running",
        "loadgen": "running",
    }
    assert [s["step"] for s in status["steps"]][-1].startswith("load generator sending")
    # The chart's objects exist in the API server, as in a cluster; its pods stay Pending.
    deployments = demo.kubectl("get", "deployments", "-n", "demo", "-o", "name").split()
    assert "deployment.apps/payflow" in deployments
    assert demo.kubectl("get", "configmap", "payflow-faults", "-n", "demo", "-o", "name").strip()
    assert demo.get("/health")
    # The load generator's traffic reaches the app.
    wait_for(
        lambda: demo.get("/api/transactions?limit=1")["items"], timeout=20, what="a transaction from the load"
    )


def active_faults(demo: DemoStack) -> dict[str, Any]:
    return {name: f for name, f in demo.get("/api/config")["faults"].items() if f["active"]}


def test_a_live_incident_acts_without_a_restart(demo: DemoStack) -> None:
    pid = demo.status["workloads"]["app"]["pid"]
    demo.kubectl("apply", "-f", "examples/incidents/latency.yaml")
    latency = wait_for(lambda: active_faults(demo).get("latency"), timeout=5, what="latency in /api/config")
    assert latency["source"] == "configmap"
    assert [i["incident"] for i in latency["incidents"]] == ["checkout-latency"]
    row = demo.kubectl("get", "pfi", "checkout-latency", "-n", "demo", "--no-headers").split()
    assert row[:5] == ["checkout-latency", "payflow", "latency", "live", "Active"]
    demo.kubectl("delete", "-f", "examples/incidents/latency.yaml")
    wait_for(lambda: "latency" not in active_faults(demo), timeout=5, what="latency cleared")
    assert demo.status["workloads"]["app"]["pid"] == pid


def test_a_rollout_incident_replaces_the_app_and_its_end_rolls_back(demo: DemoStack) -> None:
    before = demo.status["workloads"]["app"]
    demo.kubectl("apply", "-f", "-", input=ROLLOUT_LATENCY)

    def replaced() -> dict[str, Any] | None:
        app = demo.status["workloads"]["app"]
        return app if app["pid"] not in (None, before["pid"]) and app["state"] == "running" else None

    after = wait_for(replaced, timeout=20, what="the app replaced by the rollout")
    assert after["restarts"] == before["restarts"] + 1
    # The new "pod" started with the faults in its environment (envFrom), as a new ReplicaSet's pods do.
    latency = wait_for(lambda: active_faults(demo).get("latency"), timeout=10, what="latency after rollout")
    assert latency["params"]["delayMs"] == 50
    revisions = json.loads(
        demo.kubectl("get", "rs", "-n", "demo", "-l", "app.kubernetes.io/component=api", "-o", "json")
    )
    assert len(revisions["items"]) == 2

    demo.kubectl("delete", "pfi", "slow-deploy", "-n", "demo")
    # The ConfigMap clears the fault at once (live); the rollback then replaces the app again,
    # and the new process starts from the baseline.
    wait_for(
        lambda: demo.status["workloads"]["app"]["restarts"] == before["restarts"] + 2,
        timeout=20,
        what="the app replaced again by the rollback",
    )
    latency = wait_for(
        lambda: (f := demo.get("/api/config")["faults"]["latency"])["source"] == "environment" and f,
        timeout=20,
        what="the rolled-back app serving",
    )
    assert not latency["active"]


def test_a_crashing_app_is_restarted_with_a_backoff(demo: DemoStack) -> None:
    before = demo.status["workloads"]["app"]["restarts"]
    demo.kubectl("apply", "-f", "-", input=PANIC_EVERY_REQUEST)
    crashed = wait_for(
        lambda: (a := demo.status["workloads"]["app"])["last_exit"] == 70 and a["restarts"] > before and a,
        timeout=30,
        what="a panic crash and a restart",
    )
    assert crashed["restarts"] > before
    demo.kubectl("delete", "pfi", "crashy", "-n", "demo")
    wait_for(lambda: "panic" not in active_faults(demo), timeout=60, what="the app healthy without the panic")
