"""What the incident fuzzer found, kept as plain tests against the operator subprocess."""

from __future__ import annotations

from typing import Any

from payflow import faults as vocab
from payflow.operator.core import status_patch
from tests.integration.operator.conftest import Cluster, Operator, expected, incident
from tests.support import wait_for


def _applied_after(cluster: Cluster, name: str, generation: int) -> dict[str, Any] | None:
    body = cluster.incident(name) or {}
    status = body.get("status") or {}
    if status.get("observedGeneration") != generation or status.get("phase") != "Active":
        return None
    applied: dict[str, Any] = status.get("appliedFaults") or {}
    return applied


def test_dropping_a_fault_from_an_active_incident_drops_it_from_its_status(
    operator: Operator, release: Cluster
) -> None:
    # The status was written as a JSON merge patch: a fault removed from the spec stayed in
    # status.appliedFaults, and every later reconcile posted "Injected: Fault set changed".
    both = {"oom": {}, "dbTimeout": {"holdSeconds": 5}}
    release.apply(incident("shrink", both))
    wait_for(lambda: _applied_after(release, "shrink", 1), 15, "Active with both faults")
    release.apply(incident("shrink", {"oom": {}}))
    applied = wait_for(lambda: _applied_after(release, "shrink", 2), 15, "the new generation applied")
    assert applied == vocab.FaultSet.from_spec({"oom": {}}).to_dict()
    wait_for(lambda: release.faults() == expected({"oom": {}}), 10, "dbTimeout cleared from the ConfigMap")

    # Another reconcile (a second incident) does not announce a change of the first one again.
    release.apply(incident("other", {"latency": {"delayMs": 10}}))
    wait_for(lambda: release.phase("other") == "Active", 15, "the second incident Active")
    changes = [
        e
        for e in release.events("shrink")
        if e.get("reason") == "Injected" and "changed" in e.get("message", "")
    ]
    assert sum(int(e.get("count") or 1) for e in changes) == 1, changes


def test_the_status_patch_drops_what_the_new_status_no_longer_has() -> None:
    current = {
        "phase": "Active",
        "appliedFaults": {"oom": {"growthKiBPerRequest": 256}, "dbTimeout": {"holdSeconds": 5}},
        "someoneElses": {"kept": True},
    }
    wanted = {"phase": "Active", "appliedFaults": {"oom": {"growthKiBPerRequest": 256}}}
    assert status_patch(current, wanted) == {
        "phase": "Active",
        "appliedFaults": {"oom": {"growthKiBPerRequest": 256}, "dbTimeout": None},
    }
    assert status_patch(current, {"appliedFaults": None}) == {"appliedFaults": None}
