"""The fault history across crashes, with real processes, PostgreSQL and the API server.

A replica (one pod name) crashes under a fault, the incident ends while it is down, and the
next process of the same replica writes what happened: the ``off`` naming the incident at the
best known time, and the crash (by the process itself for a panic; from the pod's
``lastState.terminated`` for an OOM kill, which gives the process no chance). The API server
has no node: the tests write the pod status a kubelet would write."""

from __future__ import annotations

import json
import signal
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from kubernetes import client

from payflow.naming import SOURCES_ANNOTATION, faults_configmap_name
from tests.integration.app.conftest import AppServer, StartApp
from tests.support import wait_for

PANIC_ON = {"INJECT_PANIC": "true", "INJECT_PANIC_PROBABILITY": "1", "INJECT_PANIC_MEAN_INTERVAL_S": "0"}
# The OOM fault without growth: the test kills the process itself, as the OOM killer would.
OOM_ON = {
    "INJECT_OOM": "true",
    "INJECT_OOM_GROWTH_KIB_PER_REQUEST": "1",
    "INJECT_OOM_FLOOR_KIB_PER_SECOND": "0",
}


def _incidents(fault: str, name: str) -> dict[str, str]:
    return {SOURCES_ANNOTATION: json.dumps({fault: [{"incident": name, "expiresAt": None}]})}


class Lab:
    """One release in one namespace: its faults ConfigMap, its pods, its app processes."""

    def __init__(self, start_app: StartApp, core: Any, kubeconfig: str, namespace: str, release: str) -> None:
        self.start_app = start_app
        self.core = core
        self.kubeconfig = kubeconfig
        self.namespace = namespace
        self.release = release
        self.configmap = faults_configmap_name(release)

    def set_faults(self, data: dict[str, str], annotations: dict[str, str]) -> None:
        """What the operator writes: the INJECT_* keys and the incidents annotation."""
        body = client.V1ConfigMap(
            metadata=client.V1ObjectMeta(name=self.configmap, annotations=annotations), data=data
        )
        try:
            self.core.replace_namespaced_config_map(self.configmap, self.namespace, body)
        except client.ApiException as exc:
            if exc.status != 404:
                raise
            self.core.create_namespaced_config_map(self.namespace, body)

    def configmap_written_at(self) -> datetime:
        cm = self.core.read_namespaced_config_map(self.configmap, self.namespace)
        written: datetime = max(e.time for e in cm.metadata.managed_fields)
        return written

    def start(self, replica: str, faults: dict[str, str], pod: bool = False) -> AppServer:
        """A process of ``replica`` with ``faults`` in its environment (as envFrom gives them)."""
        env = {
            "KUBECONFIG": self.kubeconfig,
            "PAYFLOW_NAMESPACE": self.namespace,
            "PAYFLOW_WATCH_FAULTS": "true",
            "HOSTNAME": replica,
            **({"PAYFLOW_POD_NAME": replica} if pod else {}),
            **faults,
        }
        return self.start_app(env, release=self.release)

    def create_pod(self, name: str) -> None:
        self.core.create_namespaced_pod(
            self.namespace,
            client.V1Pod(
                metadata=client.V1ObjectMeta(name=name),
                spec=client.V1PodSpec(containers=[client.V1Container(name="app", image="payflow-app:test")]),
            ),
        )

    def restarted_after(self, pod: str, last: dict[str, Any], restarts: int) -> None:
        """The status the kubelet writes once it has restarted the container: running since
        now, and the previous container's end in ``lastState.terminated``."""
        now = datetime.now(UTC).replace(microsecond=0)
        status = {
            "name": "app",
            "image": "payflow-app:test",
            "imageID": "sha256:0",
            "ready": False,
            "restartCount": restarts,
            "containerID": f"containerd://c{restarts}",
            "state": {"running": {"startedAt": now.isoformat().replace("+00:00", "Z")}},
            "lastState": {"terminated": last},
        }
        self.core.patch_namespaced_pod_status(
            pod, self.namespace, {"status": {"containerStatuses": [status]}}
        )


@pytest.fixture
def lab(start_app: StartApp, kube_api: object, kubeconfig: object, namespace: str) -> Lab:
    return Lab(start_app, client.CoreV1Api(kube_api), str(kubeconfig), namespace, f"r{uuid.uuid4().hex[:8]}")


def history(app: AppServer, **params: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = app.client.get("/api/faults/history", params=params).json()["items"]
    return items


def at_least(app: AppServer, n: int, **params: str) -> list[dict[str, Any]] | None:
    """The history once it has ``n`` rows (newest first)."""
    rows = history(app, **params)
    return rows if len(rows) >= n else None


def kill(app: AppServer, sig: int = signal.SIGKILL) -> int:
    app.process.send_signal(sig)
    return app.wait_exit(timeout=10)


def at(row: dict[str, Any], field: str = "at") -> datetime:
    return datetime.fromisoformat(row[field])


def dated_by_the_configmap(row: dict[str, Any], written: datetime) -> bool:
    """The row's time is the ConfigMap's last write (the API's whole seconds: within it)."""
    return row["at_basis"] == "configmap_change" and written <= at(row) < written + timedelta(seconds=1)


START_RECORDED = "is in the fault history"


def test_a_panic_incident_that_ends_while_the_replica_is_down_gets_its_off_and_its_crash(lab: Lab) -> None:
    lab.set_faults(PANIC_ON, _incidents("panic", "boom"))
    first = lab.start("app-0", PANIC_ON)
    # the first on names the incident, from the ConfigMap's annotation (the env has none)
    on = wait_for(lambda: history(first, fault="panic"), 10, "the start's on row")
    assert [(r["change"], r["source"], r["replica"]) for r in on] == [("on", "environment", "app-0")]
    assert [i["incident"] for i in on[0]["incidents"]] == ["boom"]
    assert on[0]["kind"] == "transition"
    assert on[0]["at_basis"] == "observed"

    # an API request crashes it; the process writes its crash row before it ends
    t0 = time.monotonic()
    with pytest.raises(httpx.HTTPError):  # the connection drops
        first.client.get("/api/stats")
    assert first.wait_exit(timeout=10) == 70
    assert time.monotonic() - t0 < 5
    assert "crash recorded in" in first.log

    # the incident ends while no process of app-0 runs
    lab.set_faults({"INJECT_PANIC": "false"}, {SOURCES_ANNOTATION: "{}"})
    ended = lab.configmap_written_at()
    second = lab.start("app-0", {"INJECT_PANIC": "false"})
    rows = wait_for(lambda: at_least(second, 3, fault="panic"), 10, "three rows")
    assert [(r["kind"], r["change"]) for r in rows] == [
        ("transition", "off"),
        ("crash", "crash"),
        ("transition", "on"),
    ]
    off, crash, _ = rows
    assert [i["incident"] for i in off["incidents"]] == ["boom"]
    assert (off["source"], off["reason"]) == ("recovery", "ended_while_down")
    assert dated_by_the_configmap(off, ended)
    assert at(off) >= at(crash)
    assert at(off, "recorded_at") > at(off)
    assert off["previous"] == {"probability": 1.0, "meanIntervalSeconds": 0}
    assert [i["incident"] for i in crash["incidents"]] == ["boom"]
    assert (crash["fault"], crash["exit_code"], crash["reason"], crash["source"]) == (
        "panic",
        70,
        "panic",
        "process",
    )
    assert history(second, kind="crash") == [crash]
    assert "while the process was down" in second.log

    # more starts of the same replica add nothing: the off is written once
    second.stop()
    third = lab.start("app-0", {"INJECT_PANIC": "false"})
    wait_for(lambda: START_RECORDED in third.log, 10, "the third start recorded")
    assert history(third, fault="panic") == rows


def test_an_oom_kill_is_recorded_once_from_the_pods_container_status(lab: Lab) -> None:
    lab.set_faults(OOM_ON, _incidents("oom", "leak"))
    lab.create_pod("app-1")
    first = lab.start("app-1", OOM_ON, pod=True)
    wait_for(lambda: history(first, fault="oom"), 10, "the start's on row")
    started = datetime.now(UTC).replace(microsecond=0)
    assert kill(first) == -signal.SIGKILL  # the kernel's OOM killer: no last word
    finished = datetime.now(UTC).replace(microsecond=0)
    last = {
        "containerID": "containerd://c0",
        "exitCode": 137,
        "reason": "OOMKilled",
        "startedAt": started.isoformat().replace("+00:00", "Z"),
        "finishedAt": finished.isoformat().replace("+00:00", "Z"),
    }

    # the kubelet restarts the container: still under the fault
    lab.restarted_after("app-1", last, restarts=1)
    second = lab.start("app-1", OOM_ON, pod=True)
    crash = wait_for(lambda: history(second, kind="crash"), 20, "the crash row from the container status")
    assert len(crash) == 1
    (row,) = crash
    assert (row["fault"], row["reason"], row["exit_code"]) == ("oom", "OOMKilled", 137)
    assert (row["source"], row["at_basis"]) == ("kubelet", "container_status")
    assert (row["pod"], row["replica"], row["container_id"]) == ("app-1", "app-1", "containerd://c0")
    assert at(row) == finished
    assert [i["incident"] for i in row["incidents"]] == ["leak"]
    # one on for the two processes: the interval goes on across the restart
    assert [r["change"] for r in history(second, fault="oom", kind="transition")] == ["on"]

    # a later start that reads the same termination (the status has not moved on) adds nothing
    kill(second)
    lab.restarted_after("app-1", last, restarts=1)
    third = lab.start("app-1", OOM_ON, pod=True)
    wait_for(lambda: "is recorded already" in third.log, 20, "the third start to read the status")
    assert history(third, kind="crash") == crash
    third.stop()  # SIGTERM: a stopping process ends its faults
    rows = history(lab.start("app-1", {}, pod=True), fault="oom")
    assert [(r["kind"], r["change"], r["reason"]) for r in rows] == [
        ("transition", "off", "stopped"),
        ("crash", "crash", "OOMKilled"),
        ("transition", "on", None),
    ]


def test_a_replica_whose_pod_is_gone_gets_its_open_intervals_closed(lab: Lab) -> None:
    """A rollback starts the new pods first and deletes the crash-looping ones after: a
    replica that is up notices the pod gone and writes the off it never will."""
    lab.set_faults(OOM_ON, _incidents("oom", "leak"))
    lab.create_pod("app-old")
    old = lab.start("app-old", OOM_ON, pod=True)
    wait_for(lambda: history(old, fault="oom"), 10, "its on row")
    kill(old)  # OOMKilled; the kubelet's back-off holds it down
    lab.set_faults({}, {SOURCES_ANNOTATION: "{}"})
    ended = lab.configmap_written_at()
    lab.create_pod("app-new")
    new = lab.start("app-new", {"PAYFLOW_GONE_CHECK_S": "0.5"}, pod=True)
    wait_for(lambda: START_RECORDED in new.log, 10, "its start")
    # app-old's pod still exists: its interval stays open (it will write its own off at its start)
    assert [r["change"] for r in history(new, fault="oom")] == ["on"]
    lab.core.delete_namespaced_pod("app-old", lab.namespace, grace_period_seconds=0)
    rows = wait_for(lambda: at_least(new, 2, fault="oom"), 20, "the gone replica's off")
    off = rows[0]
    assert (off["replica"], off["pod"], off["reason"]) == ("app-old", "app-old", "replica_gone")
    assert (off["change"], off["source"]) == ("off", "recovery")
    assert [i["incident"] for i in off["incidents"]] == ["leak"]
    assert dated_by_the_configmap(off, ended)
    assert "intervals of replicas that are gone" in new.log
