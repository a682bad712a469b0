"""docs/incidents.md agrees with the code: the fault reference is the generator's output, and
every phase, setting and metric is documented."""

from __future__ import annotations

from pathlib import Path

from payflow import naming
from payflow.operator.core import Phase
from payflow.operator.reference import faults_markdown
from payflow.operator.settings import OperatorSettings

DOC = (Path(__file__).resolve().parents[3] / "docs" / "incidents.md").read_text()


def test_fault_reference_is_generated_from_the_vocabulary() -> None:
    assert faults_markdown() in DOC, "regenerate with: python -m payflow.operator.reference"


def test_phases_settings_and_names_are_documented() -> None:
    for phase in Phase:
        assert f"| `{phase.value}` |" in DOC
    for name in OperatorSettings.model_fields:
        assert f"PAYFLOW_{name.upper()}" in DOC
    for name in (
        naming.FINALIZER,
        naming.OPT_IN_LABEL,
        naming.BASELINE_ANNOTATION,
        naming.SOURCES_ANNOTATION,
    ):
        assert name in DOC
    for metric in ("payflow_operator_incidents", "payflow_operator_reconcile_duration_seconds"):
        assert metric in DOC
