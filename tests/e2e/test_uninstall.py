"""The end of a lab, as users end it: `helm test`, `helm uninstall` and `kubectl delete namespace`
with incidents still active. Nothing may be left behind, and nothing may hang.

These run last (the file sorts last in tests/e2e): the uninstall reinstalls the chart for the
namespace deletion, and the namespace deletion ends the suite's lab.
"""

from __future__ import annotations

import json
import time
from datetime import datetime

import pytest

from payflow.devstack.nodedemo import pod_problems
from tests.e2e.conftest import NS, RELEASE, Cluster
from tests.support import wait_for

pytestmark = pytest.mark.e2e

NAMESPACE_DEADLINE = 60.0  # the acceptance: a lab's namespace is gone within 60 s


def apply_incidents(c: Cluster) -> list[str]:
    """Two Active incidents, one live and one delivered as a rollout (it stamps the pod template)."""
    names = []
    for name, delivery, faults in (
        ("end-latency", "live", "{latency: {delayMs: 100}}"),
        ("end-errors", "rollout", "{errorRate: {ratio: 0.1}}"),
    ):
        names.append(c.apply_incident(name, faults, delivery))

    def all_active() -> bool:
        return all(c.json("get", "pfi", n).get("status", {}).get("phase") == "Active" for n in names)

    wait_for(all_active, timeout=60, interval=0.5, what=f"{names} Active")
    return names


def wait_all_ready(c: Cluster, timeout: float = 300) -> None:
    def ready() -> bool:
        pods = c.json("get", "pods")["items"]
        return bool(pods) and not pod_problems(pods)

    wait_for(ready, timeout=timeout, interval=1.0, what="every pod of the chart Ready")


def test_helm_test_passes(cluster: Cluster) -> None:
    out = cluster.sh("helm test payflow -n demo", timeout=300).stdout
    assert "Succeeded" in out, out


def test_helm_uninstall_with_active_incidents_leaves_no_incident_finalizer_or_fault(cluster: Cluster) -> None:
    apply_incidents(cluster)
    started = time.time()
    out = cluster.sh("helm uninstall payflow -n demo --wait", timeout=300)
    assert "uninstalled" in out.stdout
    left = cluster.json("get", "pfi")["items"]
    assert not left, f"incidents left: {[i['metadata'] for i in left]}"
    assert not cluster.k(
        "get", "configmap", "-l", f"app.kubernetes.io/instance={RELEASE}", "-o", "name"
    ).strip()
    # The pre-delete hook ran as a real Job on the node (its pod is gone with it on success).
    events = cluster.json("get", "events", "--field-selector", "involvedObject.kind=Job")["items"]
    assert any(
        e["reason"] == "Completed" and e["lastTimestamp"] and _ts(e["lastTimestamp"]) >= started - 1
        for e in events
    ), json.dumps([(e["reason"], e["involvedObject"]["name"]) for e in events])

    cluster.sh("helm install payflow ./helm/payflow -n demo", timeout=300)
    wait_all_ready(cluster)
    faults = cluster.app_config()["faults"]
    assert not any(f["active"] for f in faults.values()), "a reinstalled chart starts at the baseline"


def _ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def test_deleting_the_namespace_with_active_incidents_completes_within_60s(cluster: Cluster) -> None:
    apply_incidents(cluster)
    t0 = time.monotonic()
    cluster.sh(f"kubectl delete namespace {NS} --wait=false")

    def gone() -> bool:
        proc = cluster.sh(f"kubectl get namespace {NS} -o name", check=False)
        return proc.returncode != 0 and "NotFound" in proc.stderr

    def why() -> str:
        proc = cluster.sh(f"kubectl get namespace {NS} -o json", check=False)
        return proc.stdout[-1500:] if proc.returncode == 0 else proc.stderr

    try:
        wait_for(gone, timeout=NAMESPACE_DEADLINE, interval=0.5, what=f"namespace {NS} gone")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{why()}") from None
    print(f"namespace {NS} gone {time.monotonic() - t0:.1f}s after kubectl delete namespace")
