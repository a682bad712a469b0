"""Proof that the chart's RBAC suffices: the operator, run as a local process with its own
ServiceAccount's token (not admin) and the settings of its Deployment, drives whole incidents
against the objects `helm install` made; and the uninstall hook's command, with the same token
and the hook's extra Role, leaves no incident and no fault when the operator is gone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from payflow import naming
from payflow.devstack.process import Process, free_port
from payflow.devstack.stack import LocalStack
from tests.conftest import Kubectl
from tests.integration.helm.conftest import Helm, Release, crd_served, install
from tests.support import wait_for
from tests.unit.helm.chart import REPO, hook

EXAMPLES = REPO / "examples" / "incidents"
CONSOLE_SCRIPT = Path(sys.executable).parent / "payflow-operator"  # as the image runs it


def _example(name: str, namespace: str) -> dict[str, Any]:
    incident: dict[str, Any] = yaml.safe_load((EXAMPLES / name).read_text())
    incident["metadata"]["namespace"] = namespace
    return incident


def _healthy(port: int) -> bool:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp:
        return bool(resp.status == 200)


@dataclass
class AsOperator:
    """The operator's identity and settings, taken from what the chart installed."""

    release: Release
    kubeconfig: Path  # its ServiceAccount's token, nothing else
    workdir: Path

    @classmethod
    def of(cls, release: Release, kubectl: Kubectl, stack: LocalStack, workdir: Path) -> AsOperator:
        ns = release.namespace
        account = release.service_account("operator")
        token = kubectl("create", "token", account, "-n", ns, "--duration", "20m").stdout.strip()
        kubeconfig = stack.write_token_kubeconfig(workdir / "operator.kubeconfig", token, ns)
        who = kubectl("--kubeconfig", str(kubeconfig), "auth", "whoami", "-o", "json")
        assert (
            json.loads(who.stdout)["status"]["userInfo"]["username"]
            == f"system:serviceaccount:{ns}:{account}"
        )
        return cls(release, kubeconfig, workdir)

    def env(self) -> dict[str, str]:
        """The plain environment variables of the chart's operator container, and the token."""
        (container,) = self.release.workload("operator")["spec"]["template"]["spec"]["containers"]
        settings = {e["name"]: e["value"] for e in container["env"] if "value" in e}
        return {**os.environ, **settings, "KUBECONFIG": str(self.kubeconfig)}

    def process(self) -> tuple[Process, int]:
        port = free_port()
        env = {**self.env(), "PAYFLOW_OPERATOR_HOST": "127.0.0.1", "PAYFLOW_OPERATOR_PORT": str(port)}
        return Process(
            "payflow-operator", [str(CONSOLE_SCRIPT)], self.workdir / "operator.log", env, self.workdir
        ), port

    def forbidden_in_log(self) -> list[str]:
        text = (self.workdir / "operator.log").read_text(errors="replace")
        return [line for line in text.splitlines() if "Forbidden" in line or " 403" in line]


@pytest.fixture
def operator_process(
    fresh_release: Release, kubectl: Kubectl, kube_stack: LocalStack, tmp_path: Path
) -> Iterator[AsOperator]:
    """The operator running with its own token, in an opted-in namespace; stopped afterwards."""
    crd_served(kubectl)
    kubectl("label", "namespace", fresh_release.namespace, f"{naming.OPT_IN_LABEL}={naming.OPT_IN_VALUE}")
    identity = AsOperator.of(fresh_release, kubectl, kube_stack, tmp_path)
    assert identity.env()["PAYFLOW_WATCH_NAMESPACES"] == fresh_release.namespace
    process, port = identity.process()
    process.start()
    try:
        process.wait_ready(lambda: _healthy(port), timeout=30)
        yield identity
    finally:
        process.stop()


def _phase(release: Release, name: str) -> str | None:
    body = release.get(naming.PLURAL, name)
    return ((body or {}).get("status") or {}).get("phase")


def _baseline(release: Release) -> dict[str, str]:
    body = release.get("configmap", naming.faults_configmap_name(release.name))
    assert body is not None
    baseline: dict[str, str] = json.loads(body["metadata"]["annotations"][naming.BASELINE_ANNOTATION])
    return baseline


def test_the_operator_with_its_own_token_drives_incidents(
    fresh_release: Release, kubectl: Kubectl, operator_process: AsOperator
) -> None:
    identity = operator_process
    ns = fresh_release.namespace
    app_name = fresh_release.workload(naming.APP_COMPONENT)["metadata"]["name"]
    baseline = _baseline(fresh_release)
    assert fresh_release.faults_configmap() == baseline

    def stamp() -> str | None:
        app = fresh_release.get("deployment", app_name)
        assert app is not None
        annotations = app["spec"]["template"]["metadata"].get("annotations") or {}
        return annotations.get(naming.DIGEST_ANNOTATION)

    # live: the faults ConfigMap changes, no restart.
    latency = _example("latency.yaml", ns)
    kubectl("apply", "-f", "-", input=json.dumps(latency))
    wait_for(lambda: _phase(fresh_release, "checkout-latency") == "Active", 20, "the live incident Active")
    data = fresh_release.faults_configmap()
    assert data["INJECT_LATENCY_MS"] == str(latency["spec"]["faults"]["latency"]["delayMs"])

    # rollout: the app Deployment's pod template is stamped (a new ReplicaSet).
    kubectl("apply", "-f", "-", input=json.dumps(_example("caching-incident.yaml", ns)))
    wait_for(lambda: _phase(fresh_release, "caching-incident") == "Active", 20, "the rollout incident Active")
    assert wait_for(stamp, 10, "the pod template stamp")

    # Events reach the API (create events).
    def events() -> list[str]:
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

    wait_for(events, 10, "an Event about the incident")

    # Ending them: they go at once (no finalizer), and the operator clears their faults.
    kubectl("delete", naming.PLURAL, "checkout-latency", "caching-incident", "-n", ns, "--wait=false")
    wait_for(
        lambda: (
            fresh_release.get(naming.PLURAL, "checkout-latency") is None
            and fresh_release.get(naming.PLURAL, "caching-incident") is None
        ),
        20,
        "the incidents to be gone",
    )
    wait_for(lambda: fresh_release.faults_configmap() == baseline, 10, "the baseline back")
    wait_for(lambda: stamp() is None, 10, "the pod template unstamped")
    assert identity.forbidden_in_log() == []


def test_the_uninstall_hook_leaves_no_incident_or_fault_when_the_operator_is_gone(
    helm_cli: Helm, kubectl: Kubectl, kube_stack: LocalStack, tmp_path: Path
) -> None:
    ns = f"uninstall-{os.urandom(4).hex()}"
    kubectl("create", "namespace", ns)
    kubectl("label", "namespace", ns, f"{naming.OPT_IN_LABEL}={naming.OPT_IN_VALUE}")
    release = install(helm_cli, kubectl, ns)
    try:
        crd_served(kubectl)
        identity = AsOperator.of(release, kubectl, kube_stack, tmp_path)
        baseline = _baseline(release)

        # An incident becomes Active...
        process, port = identity.process()
        process.start()
        try:
            process.wait_ready(lambda: _healthy(port), timeout=30)
            kubectl("apply", "-f", "-", input=json.dumps(_example("latency.yaml", ns)))
            wait_for(lambda: _phase(release, "checkout-latency") == "Active", 20, "the incident Active")
        finally:
            process.stop()
        # ...then the operator is gone: nobody would clear its faults once it is deleted.
        incident = release.get(naming.PLURAL, "checkout-latency")
        assert incident is not None
        assert not incident["metadata"].get("finalizers")  # it cannot hold the namespace
        assert release.faults_configmap() != baseline

        # `helm uninstall` runs the pre-delete hooks first: their Role and RoleBinding, then the
        # Job. No node runs the Job here, so its command runs as a local process, with the
        # operator's token, exactly as the Job's container has it (but a short wait).
        hooks = [
            doc for doc in yaml.safe_load_all(helm_cli("get", "hooks", release.name, "-n", ns).stdout) if doc
        ]
        pre_delete = [h for h in hooks if hook(h) == "pre-delete"]
        for h in pre_delete:
            if h["kind"] in {"Role", "RoleBinding"}:
                kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(h))
        (job,) = [h for h in pre_delete if h["kind"] == "Job"]
        command: list[str] = job["spec"]["template"]["spec"]["containers"][0]["command"]
        assert command[0] == CONSOLE_SCRIPT.name
        argv = [str(CONSOLE_SCRIPT), *command[1:]]
        argv[argv.index("--timeout") + 1] = "2"
        done = subprocess.run(
            argv, env=identity.env(), cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False
        )
        assert done.returncode == 0, done.stdout + done.stderr

        assert release.get(naming.PLURAL, "checkout-latency") is None
        assert release.faults_configmap() == baseline
        release.uninstall()
    finally:
        kubectl("delete", "namespace", ns, "--wait=false")
    # The namespace goes: no finalizer holds it.
    wait_for(
        lambda: "NotFound" in kubectl("get", "namespace", ns, check=False).stderr, 60, "the namespace to go"
    )
