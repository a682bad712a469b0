"""Settings, the command line and the cleanup's pure part."""

from __future__ import annotations

import json

import pytest

from payflow import faults as vocab
from payflow import naming
from payflow.operator import main
from payflow.operator.cleanup import CleanupReport, cleared, restore_patch
from payflow.operator.core import ConfigMap, Deployment
from payflow.operator.settings import OperatorSettings


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAYFLOW_WATCH_NAMESPACES", "demo, staging,,")
    monkeypatch.setenv("PAYFLOW_OPERATOR_PORT", "9090")
    settings = OperatorSettings()
    assert settings.namespaces == ("demo", "staging")
    assert settings.operator_port == 9090
    monkeypatch.delenv("PAYFLOW_WATCH_NAMESPACES")
    monkeypatch.delenv("PAYFLOW_OPERATOR_PORT")
    defaults = OperatorSettings()
    assert defaults.namespaces == ()
    assert defaults.operator_port == 8080


def test_crd_subcommand_prints_the_crd(capsys: pytest.CaptureFixture[str]) -> None:
    assert main.main(["crd"]) == 0
    assert f"name: {naming.PLURAL}.{naming.GROUP}" in capsys.readouterr().out


def test_cleanup_needs_a_namespace_and_a_target(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main.main(["cleanup", "--target", "payflow"])
    assert exc.value.code == 2
    assert "--namespace" in capsys.readouterr().err


def test_restore_patch_returns_to_the_baseline() -> None:
    baseline = vocab.FaultSet.from_env({"INJECT_CPU_BURN": "true"}).to_env()
    injected = {**baseline, "INJECT_LATENCY_MS": "900", "INJECT_LATENCY_JITTER_MS": "0", "OTHER": "x"}
    cm = ConfigMap(
        "payflow-faults",
        injected,
        {naming.BASELINE_ANNOTATION: json.dumps(baseline), naming.SOURCES_ANNOTATION: '{"latency":[]}'},
    )
    patch = restore_patch(cm)
    assert patch == {
        "data": {"INJECT_LATENCY_MS": "0", "INJECT_LATENCY_JITTER_MS": None},
        "metadata": {"annotations": {naming.SOURCES_ANNOTATION: "{}"}},
    }
    at_baseline = ConfigMap(
        "payflow-faults", {**baseline, "OTHER": "x"}, {naming.BASELINE_ANNOTATION: json.dumps(baseline)}
    )
    assert restore_patch(at_baseline) is None


def test_a_release_is_cleared_when_nothing_of_its_incidents_is_left() -> None:
    baseline = vocab.FaultSet.from_env({"INJECT_CPU_BURN": "true"}).to_env()
    annotations = {naming.BASELINE_ANNOTATION: json.dumps(baseline), naming.SOURCES_ANNOTATION: "{}"}
    at_baseline = ConfigMap("payflow-faults", {**baseline, "OTHER": "x"}, annotations)
    plain = Deployment("payflow-api", "u", {"kept": "yes"})
    assert cleared([], at_baseline, [plain])
    assert cleared([], None, [])  # no ConfigMap, no Deployment: nothing can hold a fault
    assert not cleared([{"metadata": {"name": "left"}}], at_baseline, [plain])
    held = ConfigMap(
        "payflow-faults",
        {**baseline, "INJECT_PANIC": "true"},
        {**annotations, naming.SOURCES_ANNOTATION: '{"panic":[{"incident":"p","expiresAt":null}]}'},
    )
    assert not cleared([], held, [plain])
    stamped = Deployment("payflow-api", "u", {naming.DIGEST_ANNOTATION: "abc"})
    assert not cleared([], at_baseline, [stamped])


def test_the_cleanup_summary_says_who_cleared() -> None:
    assert CleanupReport().summary() == "no incidents to delete; no faults in force"
    assert "the operator cleared their faults" in CleanupReport(deleted=["a", "b"]).summary()
    forced = CleanupReport(
        deleted=["a"], cleared_by_operator=False, timeout=2, configmap_restored=True, unstamped=["d"]
    )
    assert forced.summary() == (
        "deleted 1 incident(s); the operator did not clear the faults within 2s: baseline restored "
        "on the ConfigMap (changed), rollout stamp removed from 1 Deployment(s), finalizers removed "
        "from 0 incident(s)"
    )
