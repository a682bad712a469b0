"""The opt-in holds: in a namespace without the label `payflow.dev/inject=enabled` (never set,
or set to another value) an incident is Refused, says why in a condition and an Event, and the
release is not touched: the faults ConfigMap keeps its data and its resourceVersion, and the app
Deployment's pod template keeps its generation (no rollout)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from payflow import naming
from tests.conftest import Kubectl
from tests.integration.operator.conftest import (
    RELEASE,
    Cluster,
    Operator,
    configmap_manifest,
    deployment_manifest,
    incident,
)
from tests.support import wait_for

LATENCY = {"latency": {"delayMs": 5000}}


@pytest.fixture
def unlabelled(kubectl: Kubectl, namespace: str, crd: str) -> Iterator[Cluster]:
    """A release (faults ConfigMap, app Deployment) in a namespace that never opted in."""
    c = Cluster(kubectl, namespace)
    c.apply(configmap_manifest())
    c.apply(deployment_manifest())
    yield c
    for name in kubectl("get", naming.PLURAL, "-n", namespace, "-o", "name", check=False).stdout.split():
        kubectl("patch", name, "-n", namespace, "--type=merge", "-p", '{"metadata":{"finalizers":null}}')


def _snapshot(c: Cluster) -> dict[str, Any]:
    cm = c.get("configmap", naming.faults_configmap_name(RELEASE)) or {}
    dep = c.get("deployment", f"{RELEASE}-api") or {}
    return {
        "configmap data": cm.get("data"),
        "configmap annotations": cm["metadata"].get("annotations"),
        "configmap resourceVersion": cm["metadata"]["resourceVersion"],
        "deployment generation": dep["metadata"]["generation"],
        "pod template annotations": dep["spec"]["template"]["metadata"].get("annotations"),
    }


@pytest.mark.parametrize("label", [None, "disabled"], ids=["no-label", "label-not-enabled"])
def test_an_incident_where_the_namespace_did_not_opt_in_is_refused_and_touches_nothing(
    operator: Operator, unlabelled: Cluster, kubectl: Kubectl, label: str | None
) -> None:
    if label is not None:
        kubectl("label", "namespace", unlabelled.namespace, f"{naming.OPT_IN_LABEL}={label}")
    before = _snapshot(unlabelled)
    unlabelled.apply(incident("live-here", LATENCY))
    unlabelled.apply(incident("rollout-here", {"oom": {}}, delivery="rollout", duration="1h"))

    for name in ("live-here", "rollout-here"):

        def refused(n: str = name) -> dict[str, Any] | None:
            body = unlabelled.incident(n)
            return body if body and (body.get("status") or {}).get("phase") == "Refused" else None

        def refusal_events(n: str = name) -> list[dict[str, Any]]:
            return [e for e in unlabelled.events(n) if e.get("reason") == "Refused"]

        body = wait_for(refused, 15, f"{name} Refused")
        conditions = {c["type"]: c for c in body["status"]["conditions"]}
        accepted = conditions["Accepted"]
        assert (accepted["status"], accepted["reason"]) == ("False", "NamespaceNotOptedIn")
        assert f"{naming.OPT_IN_LABEL}={naming.OPT_IN_VALUE}" in accepted["message"]
        assert conditions["Injected"]["status"] == "False"
        assert not body["status"].get("appliedFaults")
        assert not body["status"].get("activatedAt")
        events = wait_for(refusal_events, 15, f"a Refused event on {name}")
        assert events[0]["type"] == "Warning"
        assert f"{naming.OPT_IN_LABEL}={naming.OPT_IN_VALUE}" in events[0]["message"], events[0]["message"]

    assert operator.healthy()
    assert _snapshot(unlabelled) == before, json.dumps({"before": before, "after": _snapshot(unlabelled)})
