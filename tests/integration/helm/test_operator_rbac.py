"""Proof that the chart's RBAC suffices: the operator, run as a local process with its own
ServiceAccount's token (not admin) and the settings of its Deployment, drives whole incidents
against the objects `helm install` made."""

from __future__ import annotations

import json
import os
import sys
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from payflow import naming
from payflow.devstack.process import Process, free_port
from payflow.devstack.stack import LocalStack
from tests.conftest import Kubectl
from tests.integration.helm.conftest import Release, crd_served
from tests.support import wait_for
from tests.unit.helm.chart import REPO

EXAMPLES = REPO / "examples" / "incidents"


def _example(name: str, namespace: str) -> dict[str, Any]:
    incident: dict[str, Any] = yaml.safe_load((EXAMPLES / name).read_text())
    incident["metadata"]["namespace"] = namespace
    return incident


def _operator_env(release: Release) -> dict[str, str]:
    """The plain environment variables of the chart's operator container."""
    (container,) = release.workload("operator")["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


def _healthy(port: int) -> bool:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp:
        return bool(resp.status == 200)


def test_the_operator_with_its_own_token_drives_incidents(
    fresh_release: Release, kubectl: Kubectl, kube_stack: LocalStack, tmp_path: Path
) -> None:
    ns = fresh_release.namespace
    crd_served(kubectl)
    kubectl("label", "namespace", ns, f"{naming.OPT_IN_LABEL}={naming.OPT_IN_VALUE}")
    account = fresh_release.service_account("operator")
    token = kubectl("create", "token", account, "-n", ns, "--duration", "20m").stdout.strip()
    kubeconfig = kube_stack.write_token_kubeconfig(tmp_path / "operator.kubeconfig", token, ns)
    who = kubectl("--kubeconfig", str(kubeconfig), "auth", "whoami", "-o", "json")
    assert json.loads(who.stdout)["status"]["userInfo"]["username"] == f"system:serviceaccount:{ns}:{account}"

    settings = _operator_env(fresh_release)
    assert settings["PAYFLOW_WATCH_NAMESPACES"] == ns
    port = free_port()
    log = tmp_path / "operator.log"
    operator = Process(
        name="payflow-operator",
        # The console script, as the image runs it (never `python -m` from the repo root).
        argv=[str(Path(sys.executable).parent / "payflow-operator")],
        log_path=log,
        env={
            **os.environ,
            **settings,
            "KUBECONFIG": str(kubeconfig),
            "PAYFLOW_OPERATOR_HOST": "127.0.0.1",
            "PAYFLOW_OPERATOR_PORT": str(port),
        },
        cwd=tmp_path,
    )
    configmap = naming.faults_configmap_name(fresh_release.name)
    app_name = fresh_release.workload(naming.APP_COMPONENT)["metadata"]["name"]
    baseline = json.loads(
        (fresh_release.get("configmap", configmap) or {})["metadata"]["annotations"][
            naming.BASELINE_ANNOTATION
        ]
    )
    assert fresh_release.faults_configmap() == baseline

    def phase(name: str) -> str | None:
        body = fresh_release.get(naming.PLURAL, name)
        return ((body or {}).get("status") or {}).get("phase")

    def stamp() -> str | None:
        app = fresh_release.get("deployment", app_name)
        assert app is not None
        annotations = app["spec"]["template"]["metadata"].get("annotations") or {}
        return annotations.get(naming.DIGEST_ANNOTATION)

    operator.start()
    try:
        operator.wait_ready(lambda: _healthy(port), timeout=30)

        # live: the faults ConfigMap changes, no restart.
        latency = _example("latency.yaml", ns)
        kubectl("apply", "-f", "-", input=json.dumps(latency))
        wait_for(lambda: phase("checkout-latency") == "Active", 20, "the live incident to be Active")
        data = fresh_release.faults_configmap()
        assert data["INJECT_LATENCY_MS"] == str(latency["spec"]["faults"]["latency"]["delayMs"])

        # rollout: the app Deployment's pod template is stamped (a new ReplicaSet).
        kubectl("apply", "-f", "-", input=json.dumps(_example("caching-incident.yaml", ns)))
        wait_for(lambda: phase("caching-incident") == "Active", 20, "the rollout incident to be Active")
        assert wait_for(stamp, 10, "the pod template stamp")

        # Events reach the API (create events).
        def operator_events() -> list[str]:
            out = kubectl(
                "get",
                "events",
                "-n",
                ns,
                "--field-selector",
                "involvedObject.name=checkout-latency",
                "-o",
                "json",
            )
            return [e["reason"] for e in json.loads(out.stdout)["items"]]

        wait_for(operator_events, 10, "an Event about the incident")

        # Ending them: the finalizer clears the faults, then lets the objects go.
        kubectl("delete", naming.PLURAL, "checkout-latency", "caching-incident", "-n", ns, "--wait=false")
        wait_for(
            lambda: (
                fresh_release.get(naming.PLURAL, "checkout-latency") is None
                and fresh_release.get(naming.PLURAL, "caching-incident") is None
            ),
            20,
            "the incidents to be gone",
        )
        assert fresh_release.faults_configmap() == baseline
        assert stamp() is None
    finally:
        operator.stop()

    text = log.read_text(errors="replace")
    assert "Forbidden" not in text, operator.log_tail(40)
    assert " 403" not in text, operator.log_tail(40)
