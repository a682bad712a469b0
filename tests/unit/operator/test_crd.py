"""The CRD is generated from the vocabulary; the committed copies are that output."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from payflow import faults as vocab
from payflow import naming
from payflow.operator import crd
from payflow.operator.core import Delivery, Phase

REPO = Path(__file__).resolve().parents[3]
COPIES = [
    p for p in (REPO / "crds" / "payflowincident.yaml", REPO / "helm/payflow/crds/payflowincident.yaml")
]


@pytest.mark.parametrize("path", [p for p in COPIES if p.exists()], ids=lambda p: str(p.relative_to(REPO)))
def test_committed_crd_is_the_generators_output(path: Path) -> None:
    assert path.read_text() == crd.render(), f"regenerate: python -m payflow.operator.crd > {path}"


def _version() -> dict[str, Any]:
    version: dict[str, Any] = crd.crd()["spec"]["versions"][0]
    return version


def test_names_come_from_naming() -> None:
    spec = crd.crd()["spec"]
    assert spec["group"] == naming.GROUP
    assert _version()["name"] == naming.VERSION
    assert spec["names"]["kind"] == naming.KIND
    assert spec["names"]["plural"] == naming.PLURAL
    assert spec["names"]["shortNames"] == ["pfi"]
    assert spec["names"]["categories"] == [naming.CATEGORY]
    assert _version()["subresources"] == {"status": {}}


def test_faults_schema_is_the_vocabularys() -> None:
    schema = _version()["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert schema["properties"]["faults"] == vocab.crd_faults_schema()
    assert schema["properties"]["delivery"]["enum"] == [d.value for d in Delivery]
    assert schema["properties"]["delivery"]["default"] == "live"
    assert schema["required"] == ["target", "faults"]


def test_a_fractional_minimum_is_also_a_cel_rule() -> None:
    """The API server truncates a number's minimum for a whole-number value (0 passes 0.1);
    each such parameter carries a CEL rule with the real bound."""
    faults = vocab.crd_faults_schema()["properties"]
    fractional = [(f.name, p) for f in vocab.FAULTS for p in f.params if not float(p.minimum).is_integer()]
    assert fractional, "the vocabulary has a fractional minimum (cpuBurn.cores)"
    for name, p in fractional:
        rules = faults[name]["properties"][p.key]["x-kubernetes-validations"]
        assert [r["rule"] for r in rules] == [f"self >= {p.minimum!r}"]


def test_printer_columns_read_explicit_fields() -> None:
    columns = {c["name"]: c["jsonPath"] for c in _version()["additionalPrinterColumns"]}
    assert columns == {
        "Target": ".spec.target",
        "Faults": ".status.faultNames",
        "Delivery": ".spec.delivery",
        "Phase": ".status.phase",
        "Expires": ".status.expiresAt",
        "Age": ".metadata.creationTimestamp",
    }
    status = _version()["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    assert status["phase"]["enum"] == [p.value for p in Phase]
    assert {"phase", "conditions", "activatedAt", "expiresAt", "endedAt", "appliedFaults"} <= set(status)
    assert {"observedGeneration", "message", "faultNames"} <= set(status)


def _fields(schema: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, schema
    for name, child in (schema.get("properties") or {}).items():
        yield from _fields(child, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from _fields(schema["items"], f"{path}[]")


def test_every_field_has_a_description_for_kubectl_explain() -> None:
    root = _version()["schema"]["openAPIV3Schema"]
    missing = [p for p, s in _fields(root, "") if p != ".metadata" and not s.get("description")]
    assert missing == []


def test_cel_rules_have_messages() -> None:
    rules = [
        r
        for _, s in _fields(_version()["schema"]["openAPIV3Schema"], "")
        for r in s.get("x-kubernetes-validations", [])
    ]
    assert len(rules) >= 5
    assert all(r["message"].startswith("spec.") for r in rules)


def test_render_is_yaml_of_the_dict() -> None:
    assert yaml.safe_load(crd.render()) == crd.crd()
