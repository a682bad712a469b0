"""Fixtures of the chart's tests on the local API server: helm with the admin kubeconfig, and
releases installed by `helm install` (no nodes: pods stay Pending) and removed afterwards."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from payflow import naming
from tests.conftest import Kubectl
from tests.support import wait_for
from tests.unit.helm.chart import CHART, Manifest, helm, values_args

RELEASE = "payflow"

Helm = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="session")
def helm_cli(kubeconfig: Path) -> Helm:
    """The pinned helm, as the admin of the local API server."""

    def run(*args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return helm(*args, kubeconfig=kubeconfig, check=check, input=input)

    return run


@dataclass
class Release:
    """One installed release: its namespace, name, and the objects helm says it made."""

    name: str
    namespace: str
    helm: Helm
    kubectl: Kubectl

    def manifests(self) -> list[Manifest]:
        text = self.helm("get", "manifest", self.name, "-n", self.namespace).stdout
        return [doc for doc in yaml.safe_load_all(text) if doc]

    def upgrade(self, files: Sequence[Path | None] = (), values: Mapping[str, Any] | None = None) -> None:
        self.helm(
            "upgrade",
            self.name,
            str(CHART),
            "-n",
            self.namespace,
            *values_args(files, values),
            input=yaml.safe_dump(dict(values)) if values else None,
        )

    def get(self, kind: str, name: str, namespaced: bool = True) -> dict[str, Any] | None:
        where = ["-n", self.namespace] if namespaced else []
        proc = self.kubectl("get", kind, name, *where, "-o", "json", check=False)
        if proc.returncode != 0:
            if "NotFound" in proc.stderr:
                return None
            raise AssertionError(proc.stderr)
        found: dict[str, Any] = json.loads(proc.stdout)
        return found

    def workload(self, component: str) -> Manifest:
        """The Deployment or StatefulSet of a component (api, operator, postgresql, redis)."""
        (found,) = [
            m
            for m in self.manifests()
            if m["kind"] in {"Deployment", "StatefulSet"}
            and m["metadata"]["labels"].get(naming.COMPONENT_LABEL) == component
        ]
        return found

    def service_account(self, component: str) -> str:
        account: str = self.workload(component)["spec"]["template"]["spec"]["serviceAccountName"]
        return account

    def faults_configmap(self) -> dict[str, str]:
        body = self.get("configmap", naming.faults_configmap_name(self.name))
        assert body is not None
        return dict(body.get("data") or {})

    def uninstall(self) -> None:
        self.helm("uninstall", self.name, "-n", self.namespace, "--no-hooks", "--wait", "--timeout", "60s")


def install(
    helm_cli: Helm,
    kubectl: Kubectl,
    namespace: str,
    files: Sequence[Path | None] = (),
    values: Mapping[str, Any] | None = None,
) -> Release:
    helm_cli(
        "install",
        RELEASE,
        str(CHART),
        "-n",
        namespace,
        *values_args(files, values),
        input=yaml.safe_dump(dict(values)) if values else None,
    )
    return Release(RELEASE, namespace, helm_cli, kubectl)


def _create_namespace(kubectl: Kubectl, prefix: str) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    kubectl("create", "namespace", name)
    return name


@pytest.fixture(scope="module")
def installed(helm_cli: Helm, kubectl: Kubectl) -> Iterator[Release]:
    """The chart with its default values, installed once for a test module's read-only checks."""
    namespace = _create_namespace(kubectl, "helm")
    release = install(helm_cli, kubectl, namespace)
    try:
        yield release
    finally:
        release.uninstall()
        kubectl("delete", "namespace", namespace, "--wait=false")


@pytest.fixture
def fresh_release(helm_cli: Helm, kubectl: Kubectl, namespace: str) -> Iterator[Release]:
    """The chart installed in the test's own namespace (for tests that change it)."""
    release = install(helm_cli, kubectl, namespace)
    try:
        yield release
    finally:
        if helm_cli("status", RELEASE, "-n", namespace, check=False).returncode == 0:
            release.uninstall()


@pytest.fixture
def other_namespace(kubectl: Kubectl) -> Iterator[str]:
    """A namespace outside the release's scope."""
    name = _create_namespace(kubectl, "other")
    try:
        yield name
    finally:
        kubectl("delete", "namespace", name, "--wait=false")


def can_i(kubectl: Kubectl, account: str, verb: str, resource: str, *extra: str) -> bool:
    """`kubectl auth can-i` as a ServiceAccount ("system:serviceaccount:<ns>:<name>")."""
    proc = kubectl("auth", "can-i", verb, resource, *extra, "--as", account, check=False)
    answer = proc.stdout.strip()
    assert answer in {"yes", "no"}, f"can-i {verb} {resource}: {answer!r} {proc.stderr}"
    return answer == "yes"


def crd_served(kubectl: Kubectl) -> bool:
    wait_for(
        lambda: kubectl("get", naming.PLURAL, "-A", check=False).returncode == 0, 15, "the CRD to be served"
    )
    return True
