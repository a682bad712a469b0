"""An incident's life against the real API server, with the operator running: apply, merge,
change, expire, delete."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import pytest

from payflow import naming
from payflow.operator.durations import parse_time
from tests.integration.operator.conftest import BASELINE, Cluster, Operator, expected, incident
from tests.support import wait_for

LATENCY = {"latency": {"delayMs": 5000}}
ERRORS = {"errorRate": {"ratio": 0.3}}


def test_apply_injects_and_status_is_active(operator: Operator, release: Cluster) -> None:
    release.apply(incident("checkout-latency", {**LATENCY, **ERRORS}, duration="15m", description="slow"))

    wait_for(lambda: release.faults() == expected(LATENCY, ERRORS), 10, "the ConfigMap to hold the faults")
    data = release.configmap_data()
    assert data["INJECT_LATENCY_MS"] == "5000"
    assert data["INJECT_ERROR_RATE"] == "0.3"
    assert data["APP_UNRELATED_KEY"] == "kept"  # keys that are not INJECT_* stay untouched

    body = wait_for(
        lambda: (
            (b := release.incident("checkout-latency")) and b.get("status", {}).get("phase") == "Active" and b
        ),
        10,
        "phase Active",
    )
    status = body["status"]
    activated, expires = parse_time(status["activatedAt"]), parse_time(status["expiresAt"])
    assert activated is not None
    assert expires is not None
    assert abs((datetime.now(UTC) - activated).total_seconds()) < 30
    assert (expires - activated).total_seconds() == 15 * 60
    assert status["observedGeneration"] == body["metadata"]["generation"]
    assert status["appliedFaults"]["latency"] == {"delayMs": 5000, "jitterMs": 0}
    assert {c["type"]: c["status"] for c in status["conditions"]} == {"Accepted": "True", "Injected": "True"}
    assert not body["metadata"].get("finalizers")  # nothing of ours holds it, or its namespace

    cm = release.get("configmap", naming.faults_configmap_name("payflow"))
    assert cm is not None
    sources = json.loads(cm["metadata"]["annotations"][naming.SOURCES_ANNOTATION])
    assert sources["latency"] == [{"incident": "checkout-latency", "expiresAt": status["expiresAt"]}]
    assert set(sources) == {"latency", "errorRate"}

    table = release.kubectl("get", naming.PLURAL, "-n", release.namespace).stdout
    header, row = table.splitlines()[:2]
    assert header.split() == ["NAME", "TARGET", "FAULTS", "DELIVERY", "PHASE", "EXPIRES", "AGE"]
    assert row.split()[:6] == [
        "checkout-latency",
        "payflow",
        "latency,errorRate",
        "live",
        "Active",
        status["expiresAt"],
    ]
    # The short name and the category reach the same objects.
    assert "checkout-latency" in release.kubectl("get", "pfi", "-n", release.namespace).stdout
    assert "checkout-latency" in release.kubectl("get", naming.CATEGORY, "-n", release.namespace).stdout

    wait_for(lambda: "Injected" in release.event_reasons("checkout-latency"), 10, "an Injected event")
    wait_for(
        lambda: "Injected" in release.event_reasons("payflow-api"), 10, "an Injected event on the Deployment"
    )
    metrics = operator.metrics()
    assert 'payflow_operator_incidents{phase="Active"} 1.0' in metrics
    assert "payflow_operator_reconcile_duration_seconds_count" in metrics


@pytest.mark.slow
def test_short_duration_expires_and_clears(operator: Operator, release: Cluster) -> None:
    release.apply(incident("blip", ERRORS, duration="5s"))
    body = wait_for(
        lambda: (b := release.incident("blip")) and b.get("status", {}).get("expiresAt") and b,
        10,
        "expiresAt",
    )
    expires_at = parse_time(body["status"]["expiresAt"])
    assert expires_at is not None
    assert release.faults() == expected(ERRORS)

    # Expired and cleared within 2 s after expiresAt.
    deadline = (expires_at - datetime.now(UTC)).total_seconds() + 2.0
    wait_for(
        lambda: release.phase("blip") == "Expired" and release.faults() == BASELINE,
        max(deadline, 0.5),
        "Expired and cleared within 2 s after expiresAt",
    )
    status = release.incident("blip")["status"]  # type: ignore[index]
    ended = parse_time(status["endedAt"])
    assert ended is not None
    assert ended >= expires_at
    assert {c["type"]: c["reason"] for c in status["conditions"]}["Injected"] == "Expired"
    wait_for(lambda: "Expired" in release.event_reasons("blip"), 10, "an Expired event")


def test_delete_clears_the_faults_at_once(operator: Operator, release: Cluster) -> None:
    release.apply(incident("panic-now", {"panic": {"probability": 0.2}}))
    body = wait_for(
        lambda: (b := release.incident("panic-now")) and b.get("status", {}).get("phase") == "Active" and b,
        10,
        "Active",
    )
    assert release.faults() == expected({"panic": {"probability": 0.2}})

    deleted = time.monotonic()
    release.delete(naming.PLURAL, "panic-now", wait=True)  # no finalizer: it goes at once
    assert release.incident("panic-now") is None
    wait_for(lambda: release.faults() == BASELINE, 5, "the baseline back on the ConfigMap")
    assert time.monotonic() - deleted < 5
    data = release.configmap_data()
    assert data["INJECT_PANIC"] == "false"
    assert data["APP_UNRELATED_KEY"] == "kept"
    cm = release.get("configmap", naming.faults_configmap_name("payflow"))
    assert cm is not None
    assert cm["metadata"]["annotations"][naming.SOURCES_ANNOTATION] == "{}"
    events = wait_for(
        lambda: [e for e in release.events("panic-now") if e.get("reason") == "Cleared"],
        10,
        "a Cleared event",
    )
    assert events[0]["involvedObject"]["uid"] == body["metadata"]["uid"]
    assert events[0]["message"] == "Deleted: panic cleared on payflow."
    wait_for(
        lambda: "Cleared" in release.event_reasons("payflow-api"), 10, "a Cleared event on the Deployment"
    )


def test_overlapping_incidents_merge_and_one_deleted_leaves_the_other(
    operator: Operator, release: Cluster
) -> None:
    a = {"latency": {"delayMs": 300}, "errorRate": {"ratio": 0.3}}
    b = {"latency": {"delayMs": 900}, "errorRate": {"ratio": 0.3}, "cpuBurn": {"cores": 0.5}}
    release.apply(incident("inc-a", a))
    release.apply(incident("inc-b", b))
    wait_for(lambda: release.faults() == expected(a, b), 10, "the merge of both")
    merged = release.faults()
    assert merged.value("latency", "delayMs") == 900  # the largest
    assert merged.value("errorRate", "ratio") == 0.51  # 1 - (1 - 0.3)(1 - 0.3)
    sources = json.loads(
        release.get("configmap", "payflow-faults")["metadata"]["annotations"][naming.SOURCES_ANNOTATION]  # type: ignore[index]
    )
    assert [s["incident"] for s in sources["latency"]] == ["inc-a", "inc-b"]
    assert [s["incident"] for s in sources["cpuBurn"]] == ["inc-b"]

    release.delete(naming.PLURAL, "inc-b", wait=True)
    wait_for(lambda: release.faults() == expected(a), 5, "the merge of the one left")
    assert release.phase("inc-a") == "Active"


def test_spec_change_applies_the_new_fault_set(operator: Operator, release: Cluster) -> None:
    release.apply(incident("evolving", LATENCY))
    wait_for(lambda: release.faults() == expected(LATENCY), 10, "the first fault set")
    first = release.incident("evolving")["status"]["activatedAt"]  # type: ignore[index]
    release.apply(incident("evolving", {"dbTimeout": {"holdSeconds": 5}}))
    wait_for(lambda: release.faults() == expected({"dbTimeout": {"holdSeconds": 5}}), 10, "the new fault set")
    body = wait_for(
        lambda: (b := release.incident("evolving")) and b["status"]["observedGeneration"] == 2 and b,
        10,
        "gen 2",
    )
    assert body["status"]["activatedAt"] == first  # still the same activation
    assert body["status"]["faultNames"] == "dbTimeout"


def test_manual_edit_of_an_owned_key_is_put_back(operator: Operator, release: Cluster) -> None:
    release.apply(incident("hold", ERRORS))
    wait_for(lambda: release.faults() == expected(ERRORS), 10, "injected")
    release.kubectl(
        "patch",
        "configmap",
        "payflow-faults",
        "-n",
        release.namespace,
        "--type=merge",
        "-p",
        json.dumps({"data": {"INJECT_ERROR_RATE": "0", "APP_UNRELATED_KEY": "edited"}}),
    )
    wait_for(lambda: release.configmap_data()["INJECT_ERROR_RATE"] == "0.3", 10, "the owned key put back")
    assert release.configmap_data()["APP_UNRELATED_KEY"] == "edited"  # not ours: left as edited


def test_missing_target_is_pending_then_active(operator: Operator, cluster: Cluster) -> None:
    cluster.apply(incident("early", LATENCY, duration="10m"))
    body = wait_for(
        lambda: (b := cluster.incident("early")) and b.get("status", {}).get("phase") == "Pending" and b,
        10,
        "Pending",
    )
    injected = {c["type"]: c for c in body["status"]["conditions"]}["Injected"]
    assert (injected["status"], injected["reason"]) == ("False", "TargetNotFound")
    assert body["status"].get("activatedAt") is None  # the duration has not started

    from tests.integration.operator.conftest import configmap_manifest

    started = time.monotonic()
    cluster.apply(configmap_manifest())
    wait_for(lambda: cluster.phase("early") == "Active", 10, "Active once the ConfigMap exists")
    assert time.monotonic() - started < 10
    assert cluster.faults() == expected(LATENCY)


def test_namespace_not_opted_in_is_refused_and_untouched(operator: Operator, release: Cluster) -> None:
    release.label_namespace(False)
    before = release.configmap_data()
    release.apply(incident("not-here", LATENCY))
    body = wait_for(
        lambda: (b := release.incident("not-here")) and b.get("status", {}).get("phase") == "Refused" and b,
        10,
        "Refused",
    )
    accepted = {c["type"]: c for c in body["status"]["conditions"]}["Accepted"]
    assert (accepted["status"], accepted["reason"]) == ("False", "NamespaceNotOptedIn")
    assert naming.OPT_IN_LABEL in accepted["message"]
    wait_for(lambda: "Refused" in release.event_reasons("not-here"), 10, "a Refused event")
    assert release.configmap_data() == before

    release.label_namespace(True)  # opting in later activates it
    wait_for(lambda: release.phase("not-here") == "Active", 10, "Active after opting in")
    assert release.faults() == expected(LATENCY)
