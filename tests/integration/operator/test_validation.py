"""The API server itself rejects bad incidents (schema, CEL, strict field validation), with a
message that names the field. No operator is needed for that."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from tests.conftest import Kubectl
from tests.integration.operator.conftest import incident

VALID = incident("bad", {"latency": {"delayMs": 100}}, duration="15m", delivery="live")


def _with(path: str, value: Any) -> dict[str, Any]:
    manifest = copy.deepcopy(VALID)
    *parents, last = path.split(".")
    node = manifest
    for key in parents:
        node = node.setdefault(key, {})
    if value is _DELETE:
        node.pop(last, None)
    else:
        node[last] = value
    return manifest


_DELETE = object()

CASES = [
    (
        "latency above its range",
        _with("spec.faults.latency", {"delayMs": 70000}),
        "spec.faults.latency.delayMs",
    ),
    (
        "latency of zero does nothing",
        _with("spec.faults.latency", {"delayMs": 0}),
        "spec.faults.latency.delayMs",
    ),
    (
        "latency not a number",
        _with("spec.faults.latency", {"delayMs": "slow"}),
        "spec.faults.latency.delayMs",
    ),
    (
        "error ratio above 1",
        _with("spec.faults", {"errorRate": {"ratio": 1.5}}),
        "spec.faults.errorRate.ratio",
    ),
    ("CPU burn above 4 cores", _with("spec.faults", {"cpuBurn": {"cores": 8}}), "spec.faults.cpuBurn.cores"),
    # A whole number below a fractional minimum: the schema's own check truncates the minimum
    # (0.1 becomes 0) for integer values, so this one is the CRD's CEL rule (found by the fuzzer).
    ("CPU burn of 0 cores", _with("spec.faults", {"cpuBurn": {"cores": 0}}), "spec.faults.cpuBurn.cores"),
    ("unknown fault", _with("spec.faults", {"diskFull": {}}), "spec.faults.diskFull"),
    (
        "unknown parameter",
        _with("spec.faults.latency", {"delayMs": 5, "delay": 5}),
        "spec.faults.latency.delay",
    ),
    ("no fault", _with("spec.faults", {}), "spec.faults"),
    ("faults missing", _with("spec.faults", _DELETE), "spec.faults"),
    ("duration not Go-style", _with("spec.duration", "15 minutes"), "spec.duration"),
    ("duration too long", _with("spec.duration", "200h"), "spec.duration"),
    ("duration too short", _with("spec.duration", "500ms"), "spec.duration"),
    ("bad delivery", _with("spec.delivery", "canary"), "spec.delivery"),
    ("missing target", _with("spec.target", _DELETE), "spec.target"),
    ("target not a release name", _with("spec.target", "Pay_Flow"), "spec.target"),
    ("unknown spec field", _with("spec.severity", "high"), "spec.severity"),
    (
        "latency plus jitter above 60 s",
        _with("spec.faults.latency", {"delayMs": 50000, "jitterMs": 20000}),
        "spec.faults.latency",
    ),
    (
        "panic that never happens",
        _with("spec.faults", {"panic": {"probability": 0, "meanIntervalSeconds": 0}}),
        "spec.faults.panic",
    ),
]


@pytest.mark.parametrize(("manifest", "field"), [pytest.param(m, f, id=i) for i, m, f in CASES])
def test_invalid_spec_is_rejected_naming_the_field(
    kubectl: Kubectl, namespace: str, crd: str, manifest: dict[str, Any], field: str
) -> None:
    proc = kubectl("create", "-n", namespace, "-f", "-", check=False, input=json.dumps(manifest))
    assert proc.returncode != 0, f"accepted: {manifest['spec']}"
    assert field in proc.stderr, proc.stderr


def test_valid_spec_is_accepted_and_target_is_immutable(kubectl: Kubectl, namespace: str, crd: str) -> None:
    kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(VALID))
    moved = _with("spec.target", "another")
    proc = kubectl("apply", "-n", namespace, "-f", "-", check=False, input=json.dumps(moved))
    assert proc.returncode != 0
    assert "spec.target" in proc.stderr
    assert "immutable" in proc.stderr


def test_kubectl_explain_teaches_the_fields(kubectl: Kubectl, crd: str) -> None:
    out = kubectl("explain", "payflowincident.spec.faults.latency.delayMs").stdout
    assert "Delay added to every API request" in out
    out = kubectl("explain", "payflowincident.status.phase").stdout
    assert "Expired" in out
