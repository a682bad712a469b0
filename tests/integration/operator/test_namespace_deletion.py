"""Deleting a lab's namespace is how users clean up: it must never hang, and the operator,
whose ServiceAccount and RoleBinding go with the namespace, must not crash-loop.

The chart is installed by helm into a namespace of its own (no nodes: its pods stay Pending);
the operator runs as a local process authenticated only with the token of the chart's
ServiceAccount, with the chart's RBAC and the settings of its Deployment. The namespace is
deleted by the real namespace controller (kube-controller-manager)."""

from __future__ import annotations

import json
import os
import sys
import urllib.request
import uuid
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
from tests.integration.operator.conftest import REPO
from tests.integration.operator.lab import (
    apply_active,
    crash_marks,
    example,
    get_json,
    incidents,
    wait_namespace_gone,
)
from tests.support import kubectl_for, wait_for
from tests.unit.helm.chart import CHART, helm, of_component

RELEASE = "payflow"
GONE_WITHIN_S = 60.0


@dataclass
class Lab:
    """A namespace with the chart installed in it, and what the operator needs to run as its
    own ServiceAccount."""

    namespace: str
    manifests: list[dict[str, Any]]
    kubectl: Kubectl
    stack: LocalStack
    workdir: Path

    @property
    def account(self) -> str:
        name: str = of_component(self.manifests, "ServiceAccount", "operator")["metadata"]["name"]
        return name

    def write_token_kubeconfig(self) -> Path:
        """A kubeconfig with a fresh token of the operator's ServiceAccount, and nothing else."""
        token = self.kubectl("create", "token", self.account, "-n", self.namespace, "--duration", "20m")
        path = self.stack.write_token_kubeconfig(
            self.workdir / "operator.kubeconfig", token.stdout.strip(), self.namespace
        )
        who = self.kubectl("--kubeconfig", str(path), "auth", "whoami", "-o", "json")
        username = json.loads(who.stdout)["status"]["userInfo"]["username"]
        assert username == f"system:serviceaccount:{self.namespace}:{self.account}"
        return path

    def refused(self, kubeconfig: Path) -> bool:
        """Whether the API server refuses this kubeconfig's token (it caches a token it
        accepted for a few seconds, so a deleted ServiceAccount's token is refused a bit later)."""
        proc = self.kubectl("--kubeconfig", str(kubeconfig), "auth", "whoami", check=False)
        return proc.returncode != 0 and "Unauthorized" in proc.stderr

    def operator(self, kubeconfig: Path) -> tuple[Process, int]:
        """The operator as the chart's Deployment runs it (its plain env values), on loopback."""
        deployment = of_component(self.manifests, "Deployment", "operator")
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        settings = {e["name"]: e["value"] for e in container.get("env") or [] if "value" in e}
        assert settings["PAYFLOW_WATCH_NAMESPACES"] == self.namespace
        port = free_port()
        env = {
            **os.environ,
            **settings,
            "KUBECONFIG": str(kubeconfig),
            "PAYFLOW_OPERATOR_HOST": "127.0.0.1",
            "PAYFLOW_OPERATOR_PORT": str(port),
        }
        argv = [sys.executable, "-m", "payflow.operator.main", "run"]
        return Process("payflow-operator", argv, self.workdir / "operator.log", env, REPO), port

    def configmap_data(self) -> dict[str, str]:
        body = get_json(
            self.kubectl, "configmap", naming.faults_configmap_name(RELEASE), "-n", self.namespace
        )
        assert body is not None
        return dict(body.get("data") or {})


def _healthy(port: int) -> bool:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp:
        return bool(resp.status == 200)


@pytest.fixture
def lab(
    crd: str, kubectl: Kubectl, kubeconfig: Path, kube_stack: LocalStack, tmp_path: Path
) -> Iterator[Lab]:
    """The chart installed by `helm install` into a new opted-in namespace. Afterwards the
    namespace goes (if the test left it) and so do the release's cluster-scoped objects, which
    a namespace deletion leaves behind."""
    namespace = f"lab-{uuid.uuid4().hex[:8]}"
    kubectl("create", "namespace", namespace)
    kubectl("label", "namespace", namespace, f"{naming.OPT_IN_LABEL}={naming.OPT_IN_VALUE}")
    cluster_scoped: list[str] = []
    try:
        helm("install", RELEASE, str(CHART), "-n", namespace, kubeconfig=kubeconfig)
        text = helm("get", "manifest", RELEASE, "-n", namespace, kubeconfig=kubeconfig).stdout
        manifests = [m for m in yaml.safe_load_all(text) if m]
        cluster_scoped = [
            f"{m['kind'].lower()}/{m['metadata']['name']}"
            for m in manifests
            if m["kind"] in {"ClusterRole", "ClusterRoleBinding"}
        ]
        yield Lab(namespace, manifests, kubectl, kube_stack, tmp_path)
    finally:
        kubectl("delete", "namespace", namespace, "--wait=false", "--ignore-not-found")
        for ref in cluster_scoped:
            kubectl("delete", ref, "--ignore-not-found")


@pytest.fixture
def operator_in_lab(lab: Lab) -> Iterator[Process]:
    """The operator running with its ServiceAccount's token; stopped after the test."""
    process, port = lab.operator(lab.write_token_kubeconfig())
    process.start()
    try:
        process.wait_ready(lambda: _healthy(port), timeout=30)
        yield process
    finally:
        process.stop()


def test_deleting_the_namespace_with_active_incidents_is_done_within_a_minute(
    lab: Lab, operator_in_lab: Process, kubeconfig: Path
) -> None:
    ns = lab.namespace
    user = kubectl_for(kubeconfig)  # as the e2e suite calls the helpers
    active = apply_active(
        lab.kubectl, ns, [example("latency.yaml", ns), example("caching-incident.yaml", ns)]
    )
    assert len(active) == 2
    assert all(not i["metadata"].get("finalizers") for i in active)  # nothing of ours can hold them
    assert lab.configmap_data()["INJECT_LATENCY_MS"] == "5000"

    user("delete", "namespace", ns, "--wait=false")
    took = wait_namespace_gone(user, ns, GONE_WITHIN_S)
    print(f"namespace {ns} with 2 Active incidents gone {took:.1f}s after the delete request")

    log = operator_in_lab.log_path.read_text(errors="replace")
    assert operator_in_lab.running, f"the operator exited ({operator_in_lab.returncode}):\n{log[-3000:]}"
    assert crash_marks(log) == []
    operator_in_lab.stop()  # SIGTERM: it stops cleanly, without credentials as with them
    assert operator_in_lab.returncode == 0, operator_in_lab.log_tail(40)
    assert crash_marks(operator_in_lab.log_path.read_text(errors="replace")) == []


@pytest.mark.slow
def test_refused_credentials_are_retried_and_renewed_without_a_crash(
    lab: Lab, operator_in_lab: Process
) -> None:
    """The mechanism behind the crash loop: once its ServiceAccount is gone, every call of the
    operator is refused (HTTP 401). It keeps running, says so, and carries on with the token it
    reads once the ServiceAccount is back."""
    ns = lab.namespace
    apply_active(lab.kubectl, ns, [example("latency.yaml", ns)])
    lab.kubectl("delete", "serviceaccount", lab.account, "-n", ns)
    wait_for(lambda: lab.refused(lab.workdir / "operator.kubeconfig"), 30, "the token refused", interval=0.5)

    lab.kubectl("apply", "-f", "-", input=json.dumps(example("error-rate.yaml", ns)))
    wait_for(
        lambda: "attempt 2" in operator_in_lab.log_path.read_text(errors="replace"),
        60,
        "the operator to retry its refused credentials twice",
        interval=0.2,
    )
    assert operator_in_lab.running
    phases = {i["metadata"]["name"]: (i.get("status") or {}).get("phase") for i in incidents(lab.kubectl, ns)}
    assert phases == {"checkout-latency": "Active", "payment-errors": None}  # nothing was written

    account = of_component(lab.manifests, "ServiceAccount", "operator")
    lab.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(account))
    lab.write_token_kubeconfig()  # the same file, a new token: as the kubelet renews a pod's
    apply_active(lab.kubectl, ns, [example("error-rate.yaml", ns)], timeout=60)
    assert lab.configmap_data()["INJECT_ERROR_RATE"] == "0.3"

    log = operator_in_lab.log_path.read_text(errors="replace")
    assert operator_in_lab.running
    assert crash_marks(log) == []
