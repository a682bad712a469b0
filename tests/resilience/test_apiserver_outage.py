"""kube-apiserver stopped for 10 s with an incident in force: the app keeps the faults in force
all along, the operator and the app's ConfigMap watch reconnect by themselves, and an incident
applied right after the return reaches the app (how long after the return is the figure)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx

from tests.resilience.conftest import OwnStack
from tests.resilience.support import App, Kube, Operator, report, while_running
from tests.support import wait_for

OUTAGE_S = 10.0
NAMESPACE = "resilience"
BEFORE = {"latency": {"delayMs": 30}}  # in force through the outage (the baseline has 20)
AFTER = {"errorRate": {"ratio": 0.01}}  # applied right after the return


def test_apiserver_stopped_for_10s(own_stack: OwnStack, tmp_path: Path) -> None:
    stack = own_stack("postgres", "redis", "kube-apiserver")
    kube = Kube(stack.kubeconfig, NAMESPACE)
    kube.install()
    operator = Operator(stack.kubeconfig, NAMESPACE, tmp_path)
    operator.start()
    app = App(
        stack,
        tmp_path,
        env={
            "KUBECONFIG": str(stack.kubeconfig),
            "PAYFLOW_NAMESPACE": NAMESPACE,
            "PAYFLOW_RELEASE": kube.release,
            "PAYFLOW_WATCH_FAULTS": "true",
        },
    )
    app.start()
    client = httpx.Client(base_url=app.url, timeout=5)

    def config() -> dict[str, Any]:
        body: dict[str, Any] = client.get("/api/config").json()
        return body

    def in_force(cfg: dict[str, Any]) -> dict[str, Any]:
        return {name: f["params"] for name, f in cfg["faults"].items() if f["active"]}

    def with_error_rate() -> dict[str, Any] | None:
        cfg = config()
        return cfg if "errorRate" in in_force(cfg) else None

    try:
        kube.create("before", BEFORE)
        wait_for(
            lambda: in_force(config()).get("latency", {}).get("delayMs") == 30, 15, "the latency in force"
        )

        seen: list[dict[str, Any]] = []
        stack.stop_component("kube-apiserver")
        down_at = time.monotonic()
        while_running(down_at + OUTAGE_S, lambda: seen.append(config()))
        stack.start_component("kube-apiserver")
        back_at = time.monotonic()

        kube.create("after", AFTER)  # the API server is ready: start_component waited for /readyz
        applied_at = time.monotonic()
        # Three things come back by themselves; note when each is first seen.
        marks: dict[str, float] = {}

        def recovered() -> bool:
            cfg = config()
            if cfg["configmap"]["connected"]:
                marks.setdefault("watch", time.monotonic())
            if "INJECT_ERROR_RATE" in kube.configmap_data():
                marks.setdefault("configmap", time.monotonic())
            if "errorRate" in in_force(cfg):
                marks.setdefault("app", time.monotonic())
            return len(marks) == 3

        wait_for(recovered, 60, "the watch, the operator and the new incident back in the app")
        reached = config()
        phases = {i["metadata"]["name"]: (i.get("status") or {}).get("phase") for i in kube.incidents()}
        kube.delete("before")
        wait_for(
            lambda: in_force(config()).get("latency", {}).get("delayMs") == 20, 30, "back to the baseline"
        )
        cleared_s = time.monotonic() - back_at
    finally:
        client.close()
        kube.close()
        app_log = (tmp_path / "app.log").read_text(errors="replace")
        operator_alive = operator.proc is not None and operator.proc.running
        operator.stop()

    disconnected = [c for c in seen if not c["configmap"]["connected"]]
    figures: dict[str, Any] = {
        "outage_s": OUTAGE_S,
        "config_reads_during_outage": len(seen),
        "reads_with_the_faults_in_force": sum(
            1 for c in seen if in_force(c).get("latency", {}).get("delayMs") == 30
        ),
        "reads_showing_the_watch_disconnected": len(disconnected),
        "operator_restarts": operator.starts - 1,
        "apply_s_after_return": round(applied_at - back_at, 2),
        "watch_connected_s_after_return": round(marks["watch"] - back_at, 2),
        "configmap_written_s_after_return": round(marks["configmap"] - back_at, 2),
        "new_incident_in_app_s_after_return": round(marks["app"] - back_at, 2),
        "delete_applied_s_after_return": round(cleared_s, 2),
        "phases": phases,
    }
    report("apiserver-outage", figures)

    assert seen
    assert figures["reads_with_the_faults_in_force"] == len(seen), seen[-1]
    assert disconnected, "the app never noticed the API server was away"
    assert reached["faults"]["errorRate"]["source"] == "configmap"
    assert phases == {"before": "Active", "after": "Active"}
    assert operator_alive  # it recovered by itself: never restarted
    assert operator.starts == 1
    assert "configmap watch failed" in app_log
