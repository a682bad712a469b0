"""The chart's `faults:` values, schema and ConfigMap agree with the fault vocabulary."""

from __future__ import annotations

import importlib.util
import json
from types import ModuleType
from typing import Any

import pytest

from payflow import naming
from payflow.faults import FAULTS, FaultSet, helm_faults_schema, helm_values_to_env
from tests.unit.helm.chart import CHART, REPO, VALUES_FILES, chart_defaults, deep_merge, one, render


def _vocabulary_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("helm_sync", REPO / "helm" / "sync.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_charts_derived_files_are_up_to_date() -> None:
    stale = _vocabulary_script().stale()
    assert stale == [], f"stale: {stale}; run `.venv/bin/python helm/sync.py`"


def test_the_values_schema_faults_section_is_the_vocabularys() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["properties"]["faults"] == helm_faults_schema()


def test_values_yaml_lists_every_fault_with_its_defaults() -> None:
    expected = {
        f.name: ({"enabled": False} if f.switch else {}) | {p.key: p.default for p in f.params}
        for f in FAULTS
    }
    assert chart_defaults()["faults"] == expected


def _faults_configmap(values: dict[str, Any] | None = None, release: str = "payflow") -> dict[str, Any]:
    return one(render(values=values, release=release), "ConfigMap", naming.faults_configmap_name(release))


CASES: list[dict[str, Any]] = [
    {},
    {"oom": {"enabled": True}},
    {"oom": {"enabled": True, "growthKiBPerRequest": 65536, "floorKiBPerSecond": 1048576}},
    {"latency": {"delayMs": 5000}},
    {"latency": {"delayMs": 1, "jitterMs": 60000}},
    {"latency": {"delayMs": 0, "jitterMs": 300}},  # jitter alone: latency stays off
    {"errorRate": {"ratio": 0.3}},
    {"errorRate": {"ratio": 1}, "cpuBurn": {"enabled": True, "cores": 2}},
    {"errorRate": {"ratio": 0.00001}, "cpuBurn": {"enabled": True, "cores": 0.25}},
    {"panic": {"enabled": True, "probability": 0.125, "meanIntervalSeconds": 0}},
    {"panic": {"enabled": False, "probability": 0.9}},  # parameters of a fault that is off
    {"dbTimeout": {"enabled": True, "holdSeconds": 3600, "connections": 7}},
    {
        "oom": {"enabled": True},
        "latency": {"delayMs": 200, "jitterMs": 50},
        "errorRate": {"ratio": 0.5},
        "cpuBurn": {"enabled": True},
        "panic": {"enabled": True},
        "dbTimeout": {"enabled": True},
    },
]


BY_SWITCH = {f.name: f.switch for f in FAULTS}
FIRST_PARAM = {f.name: f.params[0].key for f in FAULTS}


@pytest.mark.parametrize("faults", CASES, ids=lambda c: ",".join(c) or "baseline")
def test_the_faults_configmap_is_helm_values_to_env(faults: dict[str, Any]) -> None:
    merged = deep_merge(chart_defaults(), {"faults": faults})["faults"]
    expected = helm_values_to_env(merged)

    configmap = _faults_configmap({"faults": faults})

    assert configmap["data"] == expected
    # The baseline the operator returns to is that same data.
    assert json.loads(configmap["metadata"]["annotations"][naming.BASELINE_ANNOTATION]) == expected
    # And the app parses it to the fault set the values describe.
    assert set(FaultSet.from_env(configmap["data"]).names) == {
        name
        for name, given in merged.items()
        if given.get("enabled") or (not BY_SWITCH[name] and given[FIRST_PARAM[name]] > 0)
    }


@pytest.mark.parametrize(
    "release", ["payflow", "shop", "a-very-long-release-name-of-fifty-three-characters-x"]
)
def test_the_faults_configmap_is_named_and_labelled_for_the_release(release: str) -> None:
    configmap = _faults_configmap(release=release)
    assert configmap["metadata"]["name"] == naming.faults_configmap_name(release)
    labels = configmap["metadata"]["labels"]
    assert labels[naming.INSTANCE_LABEL] == release
    assert labels[naming.COMPONENT_LABEL] == naming.FAULTS_COMPONENT


def _app_version(manifests: list[dict[str, Any]]) -> str:
    app = next(
        m
        for m in manifests
        if m["kind"] == "Deployment"
        and m["metadata"]["labels"][naming.COMPONENT_LABEL] == naming.APP_COMPONENT
    )
    labels = app["spec"]["template"]["metadata"]["labels"]
    image: str = app["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image.endswith(":" + labels["app.kubernetes.io/version"])
    version: str = labels["app.kubernetes.io/version"]
    return version


def test_values_buggy_ships_the_caching_bug_as_a_new_version_and_lkg_rolls_it_back() -> None:
    default = render()
    buggy = render([VALUES_FILES["buggy"]])
    lkg = render([VALUES_FILES["lkg"]])
    name = naming.faults_configmap_name("payflow")

    assert "oom" in FaultSet.from_env(one(buggy, "ConfigMap", name)["data"])
    assert not FaultSet.from_env(one(lkg, "ConfigMap", name)["data"])
    assert not FaultSet.from_env(one(default, "ConfigMap", name)["data"])
    # A new version in the pod template: a new ReplicaSet, so it looks like a deploy...
    assert _app_version(buggy) != _app_version(default)
    # ...and the rollback returns to the last known good one.
    assert _app_version(lkg) == _app_version(default)
