"""Helpers for tests of a whole lab namespace, written against kubectl only so that the e2e
suite (a real node, or any cluster) can reuse them: incidents applied and awaited Active, a
namespace deleted and awaited gone (with what holds it when it does not go), and the marks a
crashing operator leaves in its log."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from payflow import naming
from tests.conftest import Kubectl
from tests.support import wait_for

REPO = Path(__file__).resolve().parents[3]
EXAMPLES = REPO / "examples" / "incidents"

# What kopf and Python write when the operator dies or one of its tasks does.
CRASH_MARKS = ("Traceback", "LoginError", "Ran out of valid credentials", "has failed")


def example(name: str, namespace: str) -> dict[str, Any]:
    """An incident from examples/incidents, moved to ``namespace``."""
    incident: dict[str, Any] = yaml.safe_load((EXAMPLES / name).read_text())
    incident["metadata"]["namespace"] = namespace
    return incident


def get_json(kubectl: Kubectl, *args: str) -> dict[str, Any] | None:
    """``kubectl get ... -o json``; None when it is not found."""
    proc = kubectl("get", *args, "-o", "json", check=False)
    if proc.returncode != 0:
        if "NotFound" in proc.stderr:
            return None
        raise AssertionError(f"kubectl get {' '.join(args)}: {proc.stderr}")
    found: dict[str, Any] = json.loads(proc.stdout)
    return found


def incidents(kubectl: Kubectl, namespace: str) -> list[dict[str, Any]]:
    listed = get_json(kubectl, naming.PLURAL, "-n", namespace)
    return list((listed or {}).get("items") or [])


def apply_active(
    kubectl: Kubectl, namespace: str, manifests: Sequence[Mapping[str, Any]], timeout: float = 30.0
) -> list[dict[str, Any]]:
    """Apply the incidents to ``namespace`` and wait until every one is Active; their bodies."""
    names = []
    for manifest in manifests:
        body = {**manifest, "metadata": {**manifest["metadata"], "namespace": namespace}}
        kubectl("apply", "-f", "-", input=json.dumps(body))
        names.append(body["metadata"]["name"])

    def all_active() -> list[dict[str, Any]] | None:
        found = {i["metadata"]["name"]: i for i in incidents(kubectl, namespace)}
        bodies = [found.get(n) for n in names]
        if all(b is not None and (b.get("status") or {}).get("phase") == "Active" for b in bodies):
            return [b for b in bodies if b is not None]
        return None

    return wait_for(all_active, timeout, f"incidents {', '.join(names)} Active in {namespace}", interval=0.2)


def what_holds(kubectl: Kubectl, namespace: str) -> str:
    """Why a namespace is still there: its phase and conditions, and the incidents left in it
    with their finalizers."""
    body = get_json(kubectl, "namespace", namespace)
    if body is None:
        return "gone"
    status = body.get("status") or {}
    conditions = [
        f"{c.get('type')}: {c.get('message')}"
        for c in status.get("conditions") or []
        if c.get("status") == "True"
    ]
    left = [
        f"{i['metadata']['name']} {i['metadata'].get('finalizers')}" for i in incidents(kubectl, namespace)
    ]
    return f"phase {status.get('phase')}; conditions {conditions}; incidents left {left}"


def wait_namespace_gone(kubectl: Kubectl, namespace: str, timeout: float = 60.0) -> float:
    """Poll until ``namespace`` no longer exists; the seconds it took. On timeout the failure
    says what holds it (for example ``NamespaceFinalizersRemaining``)."""
    started = time.monotonic()
    try:
        wait_for(
            lambda: get_json(kubectl, "namespace", namespace) is None,
            timeout=timeout,
            interval=0.2,
            what=f"namespace {namespace} gone",
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {what_holds(kubectl, namespace)}") from None
    return time.monotonic() - started


def crash_marks(log: str) -> list[str]:
    """The lines of an operator log that show it, or one of its tasks, dying."""
    return [line for line in log.splitlines() if any(mark in line for mark in CRASH_MARKS)]
