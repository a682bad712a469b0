"""values.schema.json refuses bad values with a message that names the value; lint is clean."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.unit.helm.chart import CHART, VALUES_FILES, helm, template_text

# (bad values, what the message must name)
BAD_VALUES: dict[str, tuple[dict[str, Any], str]] = {
    "negative-replicas": ({"app": {"replicas": -1}}, "/app/replicas"),
    "replicas-not-a-number": ({"app": {"replicas": "two"}}, "/app/replicas"),
    "latency-above-range": ({"faults": {"latency": {"delayMs": 70000}}}, "/faults/latency/delayMs"),
    "error-ratio-above-one": ({"faults": {"errorRate": {"ratio": 1.5}}}, "/faults/errorRate/ratio"),
    "cores-below-range": ({"faults": {"cpuBurn": {"cores": 0}}}, "/faults/cpuBurn/cores"),
    "switch-not-a-boolean": ({"faults": {"oom": {"enabled": "yes"}}}, "/faults/oom/enabled"),
    "unknown-fault-parameter": ({"faults": {"oom": {"leak": True}}}, "'leak'"),
    "unknown-fault": ({"faults": {"chaos": {}}}, "'chaos'"),
    "no-memory-limit": ({"app": {"resources": {"limits": {"memory": None}}}}, "'memory'"),
    "bad-pull-policy": ({"app": {"image": {"pullPolicy": "Sometimes"}}}, "/app/image/pullPolicy"),
    "bad-watch-namespace": ({"operator": {"watchNamespaces": ["Bad_NS"]}}, "/operator/watchNamespaces/0"),
    "privilege-escalation": (
        {"securityContext": {"allowPrivilegeEscalation": True}},
        "/securityContext/allowPrivilegeEscalation",
    ),
    "root": ({"podSecurityContext": {"runAsNonRoot": False}}, "/podSecurityContext/runAsNonRoot"),
    "unknown-top-level-key": ({"replicaCount": 3}, "'replicaCount'"),
    "no-database": ({"postgresql": {"enabled": False}}, "/database/existingSecret"),
    "no-redis": ({"redis": {"enabled": False}}, "/redis/externalUrl"),
    "cleanup-timeout-too-long": (
        {"operator": {"cleanup": {"timeoutSeconds": 3600}}},
        "/operator/cleanup/timeoutSeconds",
    ),
}


@pytest.mark.parametrize("case", BAD_VALUES, ids=str)
def test_bad_values_are_refused_naming_the_value(case: str) -> None:
    values, named = BAD_VALUES[case]
    proc = template_text(values=values, check=False)
    assert proc.returncode != 0, f"{case}: accepted"
    assert "don't meet the specifications of the schema" in proc.stderr, proc.stderr
    assert named in proc.stderr, proc.stderr


def test_at_least_eight_kinds_of_bad_values_are_checked() -> None:
    assert len(BAD_VALUES) >= 8


def test_an_external_database_and_redis_are_accepted() -> None:
    values = {
        "database": {"existingSecret": "shop-db", "existingSecretKey": "url"},
        "postgresql": {"enabled": False},
        "redis": {"enabled": False, "externalUrl": "redis://cache.shop:6379/0"},
    }
    text = template_text(values=values).stdout
    assert "kind: StatefulSet" not in text
    assert "name: shop-db" in text
    assert "redis://cache.shop:6379/0" in text


@pytest.mark.parametrize("which", VALUES_FILES)
def test_helm_lint_strict_passes(which: str) -> None:
    path: Path | None = VALUES_FILES[which]
    proc = helm("lint", "--strict", str(CHART), *(["-f", str(path)] if path else []), check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 chart(s) failed" in proc.stdout
