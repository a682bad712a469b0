"""Every manifest under examples/incidents/ is accepted by the API server (server-side apply),
and the examples cover every fault of the vocabulary."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from payflow import faults as vocab
from tests.conftest import Kubectl
from tests.integration.operator.conftest import REPO

EXAMPLES = sorted((REPO / "examples" / "incidents").glob("*.yaml"))


def _load(path: Path) -> dict[str, Any]:
    manifest: dict[str, Any] = yaml.safe_load(path.read_text())
    return manifest


def test_examples_cover_every_fault_one_by_one_and_combined() -> None:
    singles = {next(iter(m["spec"]["faults"])) for m in map(_load, EXAMPLES) if len(m["spec"]["faults"]) == 1}
    assert singles == set(vocab.BY_NAME)
    assert any(len(m["spec"]["faults"]) > 1 for m in map(_load, EXAMPLES))
    caching = _load(REPO / "examples" / "incidents" / "caching-incident.yaml")
    assert caching["spec"]["delivery"] == "rollout"
    assert set(caching["spec"]["faults"]) == {"oom"}
    assert (caching["metadata"]["namespace"], caching["spec"]["target"]) == ("demo", "payflow")


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_is_accepted(kubectl: Kubectl, namespace: str, crd: str, path: Path) -> None:
    manifest = _load(path)
    manifest["metadata"]["namespace"] = namespace  # the examples say `demo`
    kubectl("apply", "--server-side", "-f", "-", input=json.dumps(manifest))
    stored = json.loads(
        kubectl("get", "-n", namespace, "pfi", manifest["metadata"]["name"], "-o", "json").stdout
    )
    assert stored["spec"]["faults"] == manifest["spec"]["faults"]
    assert stored["spec"]["delivery"] == manifest["spec"].get("delivery", "live")
    vocab.FaultSet.from_spec(stored["spec"]["faults"])  # the operator's own parse agrees
