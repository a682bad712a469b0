"""The seed's scenarios and every fault, on real pods: what an RCA tool sees in the cluster.

Commands the seed writes are run verbatim (``Cluster.sh``, after ``source`` of the env file).
Assertions read what a cluster user reads: pod status (``lastState.terminated``,
``restartCount``), ReplicaSets, ``kubectl logs --previous``, EndpointSlices and the kubelet's
cAdvisor metrics. The kubelet's back-off is real (10 s, doubling), so deadlines are minutes.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import pytest

from payflow import naming
from payflow.devstack.nodedemo import kubelet_metrics
from tests.e2e.conftest import NS, RELEASE, Cluster
from tests.support import wait_for

pytestmark = pytest.mark.e2e

OOM_DEADLINE = 300.0  # the kubelet's back-off grows, and the caching bug needs traffic to grow
ROLLOUT_DEADLINE = 300.0
STABLE_WINDOW = 20.0  # after a rollback, no pod may restart for this long


def app_replicasets(c: Cluster) -> dict[str, dict[str, Any]]:
    items = c.json("get", "rs", "-l", naming.app_selector(RELEASE))["items"]
    return {rs["metadata"]["name"]: rs for rs in items}


def terminated(pod: dict[str, Any]) -> list[dict[str, Any]]:
    """The last terminations of a pod's containers (``lastState.terminated``)."""
    return [
        t
        for cs in pod["status"].get("containerStatuses") or []
        if (t := (cs.get("lastState") or {}).get("terminated"))
    ]


def restarts(pod: dict[str, Any]) -> int:
    return sum(cs.get("restartCount", 0) for cs in pod["status"].get("containerStatuses") or [])


def is_ready(pod: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions") or [])


def _seconds(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def wait_oomkilled(c: Cluster, since: float, not_of: str) -> dict[str, Any]:
    """A pod of a new ReplicaSet (not the template ``not_of``) OOMKilled after ``since`` and
    restarted. (The old pods may be OOMKilled first: the fault also reaches them live.)"""

    def probe() -> dict[str, Any] | None:
        for pod in c.app_pods():
            if pod["metadata"]["labels"].get("pod-template-hash") == not_of or restarts(pod) == 0:
                continue
            if any(
                t.get("reason") == "OOMKilled" and _seconds(t["finishedAt"]) >= since for t in terminated(pod)
            ):
                return pod
        return None

    return wait_for(probe, timeout=OOM_DEADLINE, interval=1.0, what="a new pod OOMKilled and restarted")


def wait_rolled_back(c: Cluster, template_hash: str) -> list[dict[str, Any]]:
    """Every app pod is of the ReplicaSet with ``template_hash`` and Ready, and none restarts
    after that over STABLE_WINDOW seconds. (Pods of that ReplicaSet that lived through the fault
    keep their earlier restarts: the fault reached them live too.)"""

    def probe() -> list[dict[str, Any]] | None:
        pods = [p for p in c.app_pods() if not p["metadata"].get("deletionTimestamp")]
        ok = pods and all(
            p["metadata"]["labels"].get("pod-template-hash") == template_hash and is_ready(p) for p in pods
        )
        replicas = c.json("get", "deployment", RELEASE)["spec"]["replicas"]
        return pods if ok and len(pods) == replicas else None

    pods = wait_for(probe, timeout=ROLLOUT_DEADLINE, interval=1.0, what="the rollback: every pod Ready")
    counts = {p["metadata"]["name"]: restarts(p) for p in pods}
    deadline = time.monotonic() + STABLE_WINDOW
    changed: list[dict[str, int]] = []

    def window_over() -> bool:  # an observation window: the counts must hold throughout
        live = [p for p in c.app_pods() if not p["metadata"].get("deletionTimestamp")]
        now = {p["metadata"]["name"]: restarts(p) for p in live}
        if now != counts:
            changed.append(now)
            return True
        return time.monotonic() >= deadline

    wait_for(window_over, timeout=STABLE_WINDOW + 30, interval=1.0, what="the window after the rollback")
    assert not changed, f"restarts after the rollback: {counts} -> {changed[0]}"
    return pods


def current_template_hash(c: Cluster) -> str:
    pods = [p for p in c.app_pods() if is_ready(p)]
    assert pods, "no Ready app pod"
    return str(pods[0]["metadata"]["labels"]["pod-template-hash"])


def wait_steady(c: Cluster, timeout: float = ROLLOUT_DEADLINE) -> list[dict[str, Any]]:
    """The app as the chart asks for it: every replica Ready, none terminating (a previous test's
    faults may have restarted or replaced pods)."""

    def probe() -> list[dict[str, Any]] | None:
        pods = c.app_pods()
        replicas = c.json("get", "deployment", RELEASE)["spec"]["replicas"]
        live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
        ok = len(pods) == len(live) == replicas and all(is_ready(p) for p in live)
        return live if ok else None

    return wait_for(probe, timeout=timeout, interval=1.0, what="every app replica Ready")


@pytest.fixture
def incident(cluster: Cluster) -> Iterator[Callable[..., str]]:
    made: list[str] = []
    wait_steady(cluster)

    def apply(faults: str, delivery: str = "live") -> str:
        name = cluster.apply_incident(f"e2e-{uuid.uuid4().hex[:8]}", faults, delivery)
        made.append(name)
        wait_for(
            lambda: cluster.json("get", "pfi", name).get("status", {}).get("phase") == "Active",
            timeout=60,
            interval=0.5,
            what=f"incident {name} Active",
        )
        return name

    yield apply
    for name in made:
        cluster.k("delete", "pfi", name, "--ignore-not-found", "--wait=true", "--timeout=120s")


def test_the_seed_caching_incident_ooms_and_the_lkg_rollback_heals(cluster: Cluster) -> None:
    wait_steady(cluster)
    good = current_template_hash(cluster)
    before = set(app_replicasets(cluster))
    started = time.time() - 1  # finishedAt has whole seconds
    cluster.sh("helm upgrade payflow ./helm/payflow -n demo -f ./helm/payflow/values-buggy.yaml")
    try:
        pod = wait_oomkilled(cluster, started, not_of=good)
        assert set(app_replicasets(cluster)) - before, "the buggy version is a new ReplicaSet"
        oom = next(t for t in terminated(pod) if t["reason"] == "OOMKilled")
        assert oom["exitCode"] == 137
        image = pod["spec"]["containers"][0]["image"]
        assert image.endswith(":0.2.0"), image
    finally:  # the rollback runs in any case: the next tests need the last known good
        cluster.sh("helm upgrade payflow ./helm/payflow -n demo -f ./helm/payflow/values-lkg.yaml")
    wait_rolled_back(cluster, good)


def test_the_caching_incident_example_ooms_and_its_deletion_rolls_back(cluster: Cluster) -> None:
    wait_steady(cluster)
    good = current_template_hash(cluster)
    started = time.time() - 1
    cluster.sh("kubectl apply -f examples/incidents/caching-incident.yaml")
    try:
        wait_oomkilled(cluster, started, not_of=good)
    finally:
        cluster.sh("kubectl delete -f examples/incidents/caching-incident.yaml")
    wait_rolled_back(cluster, good)
    assert not cluster.app_config()["faults"]["oom"]["active"]


def test_panic_restarts_with_exit_70_and_a_traceback_in_the_previous_log(
    cluster: Cluster, incident: Callable[..., str]
) -> None:
    incident("{panic: {meanIntervalSeconds: 2}}")

    def crashed() -> dict[str, Any] | None:
        for pod in cluster.app_pods():
            if restarts(pod) > 0 and any(t.get("exitCode") == 70 for t in terminated(pod)):
                return pod
        return None

    pod = wait_for(crashed, timeout=120, interval=1.0, what="an app container exited with 70 and restarted")

    def previous_log() -> str | None:
        log = cluster.k("logs", pod["metadata"]["name"], "--previous")
        return log if "Traceback" in log else None

    log = wait_for(previous_log, timeout=60, interval=1.0, what="the traceback in kubectl logs --previous")
    assert "panic" in log.lower()


def cpu_seconds(c: Cluster) -> dict[str, float]:
    """container_cpu_usage_seconds_total of each app container, from the kubelet's cAdvisor."""
    found: dict[str, float] = {}
    pattern = re.compile(r"^container_cpu_usage_seconds_total\{([^}]*)\} ([0-9.e+-]+)", re.M)
    for labels, value in pattern.findall(kubelet_metrics(c.k)):
        fields = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        if fields.get("namespace") == NS and fields.get("container") == "app":
            found[fields["pod"]] = float(value)
    return found


def test_cpu_burn_shows_in_the_kubelets_container_cpu_metrics(
    cluster: Cluster, incident: Callable[..., str]
) -> None:
    def rate(seconds: float) -> float:
        """CPU seconds per second of all app containers over a window (cAdvisor's counters)."""
        a, t0 = cpu_seconds(cluster), time.monotonic()
        wait_for(
            lambda: time.monotonic() - t0 >= seconds, timeout=seconds + 5, interval=0.5, what="the window"
        )
        b, t1 = cpu_seconds(cluster), time.monotonic()
        return sum(b[p] - a[p] for p in a.keys() & b.keys()) / (t1 - t0)

    assert cpu_seconds(cluster), "cAdvisor reports the app containers' CPU"
    idle = rate(15)
    incident("{cpuBurn: {cores: 0.5}}")
    burning = wait_for(
        lambda: (r := rate(15)) > idle + 0.4 and r,
        timeout=120,
        interval=0.1,
        what="the container CPU to rise",
    )
    assert burning > idle + 0.4


def test_db_timeout_fails_ready_and_takes_the_pods_out_of_the_service(
    cluster: Cluster, incident: Callable[..., str]
) -> None:
    def ready_endpoints() -> int:
        slices = cluster.json("get", "endpointslices", "-l", f"kubernetes.io/service-name={RELEASE}")["items"]
        return sum(
            1 for s in slices for e in s.get("endpoints") or [] if (e.get("conditions") or {}).get("ready")
        )

    assert ready_endpoints() >= 1
    name = incident("{dbTimeout: {holdSeconds: 300, connections: 0}}")
    wait_for(lambda: ready_endpoints() == 0, timeout=120, interval=1.0, what="no ready endpoint left")
    pods = cluster.app_pods()
    assert all(not is_ready(p) for p in pods)
    cluster.k("delete", "pfi", name, "--wait=true", "--timeout=120s")
    wait_for(lambda: ready_endpoints() >= 1, timeout=120, interval=1.0, what="the pods back in the Service")


def test_latency_and_error_rate_reach_every_replica_live_without_a_restart(
    cluster: Cluster, incident: Callable[..., str]
) -> None:
    pods = {p["metadata"]["name"]: restarts(p) for p in cluster.app_pods() if is_ready(p)}
    assert len(pods) == 2, f"two app replicas: {sorted(pods)}"
    name = incident("{latency: {delayMs: 200}, errorRate: {ratio: 0.25}}")

    def in_force_everywhere() -> bool:
        for pod in pods:
            faults = cluster.pod_get(pod, "/api/config")["faults"]
            if not (faults["latency"]["active"] and faults["errorRate"]["active"]):
                return False
            assert faults["latency"]["params"]["delayMs"] == 200
            assert [i["incident"] for i in faults["errorRate"]["incidents"]] == [name]
        return True

    wait_for(in_force_everywhere, timeout=30, interval=0.2, what="both faults in every replica")
    now = {p["metadata"]["name"]: restarts(p) for p in cluster.app_pods()}
    assert now == pods, "live delivery restarts nothing and replaces no pod"
