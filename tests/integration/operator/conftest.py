"""Fixtures of the operator's acceptance tests: the CRD installed in the session's API server,
a release as the chart would make it (faults ConfigMap with its baseline annotation, app
Deployment) in an opted-in namespace, and the operator running as a real subprocess."""

from __future__ import annotations

import json
import os
import sys
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from payflow import faults as vocab
from payflow import naming
from payflow.devstack.process import Process, free_port
from tests.conftest import Kubectl
from tests.support import wait_for

REPO = Path(__file__).resolve().parents[3]
CRD_FILE = REPO / "crds" / "payflowincident.yaml"
RELEASE = "payflow"
BASELINE = vocab.FaultSet.from_env({"INJECT_LATENCY_MS": "20"})  # a baseline with a fault in it


@pytest.fixture(scope="session")
def crd(kubectl: Kubectl) -> str:
    kubectl("apply", "--server-side", "-f", str(CRD_FILE))
    kubectl("wait", "--for=condition=Established", "--timeout=30s", f"crd/{naming.PLURAL}.{naming.GROUP}")
    # Discovery may lag the Established condition by a moment.
    wait_for(lambda: kubectl("get", naming.PLURAL, "-A", check=False).returncode == 0, 15, "CRD served")
    return f"{naming.PLURAL}.{naming.GROUP}"


@dataclass
class Operator:
    process: Process
    port: int
    namespace: str

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=2) as resp:
            return str(resp.read().decode())

    def healthy(self) -> bool:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=2) as resp:
            return bool(resp.status == 200)

    def start(self) -> None:
        self.process.start()
        self.process.wait_ready(self.healthy, timeout=30)

    def stop(self) -> None:
        self.process.stop(timeout=10)


OperatorFactory = Callable[[Path], Operator]


@pytest.fixture
def operator_factory(crd: str, namespace: str, tmp_path: Path) -> Iterator[OperatorFactory]:
    """Start the operator as a subprocess with a kubeconfig, watching the test's namespace only
    (its settings: PAYFLOW_WATCH_NAMESPACES, PAYFLOW_OPERATOR_PORT); stopped after the test."""
    started: list[Operator] = []

    def start(kubeconfig: Path) -> Operator:
        port = free_port()
        env = {
            **os.environ,
            "KUBECONFIG": str(kubeconfig),
            "PAYFLOW_WATCH_NAMESPACES": namespace,
            "PAYFLOW_OPERATOR_HOST": "127.0.0.1",
            "PAYFLOW_OPERATOR_PORT": str(port),
            "PAYFLOW_PENDING_RECHECK_SECONDS": "1",
        }
        proc = Process(
            name="payflow-operator",
            argv=[sys.executable, "-m", "payflow.operator.main", "run"],
            log_path=tmp_path / f"operator-{len(started)}.log",
            env=env,
            cwd=REPO,
        )
        op = Operator(proc, port, namespace)
        started.append(op)
        op.start()
        return op

    try:
        yield start
    finally:
        for op in started:
            op.stop()


@pytest.fixture
def operator(operator_factory: OperatorFactory, kubeconfig: Path) -> Operator:
    """The operator with the admin's kubeconfig."""
    return operator_factory(kubeconfig)


def incident(
    name: str,
    faults: dict[str, Any],
    *,
    target: str = RELEASE,
    duration: str | None = None,
    delivery: str | None = None,
    description: str | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"target": target, "faults": faults}
    if duration is not None:
        spec["duration"] = duration
    if delivery is not None:
        spec["delivery"] = delivery
    if description is not None:
        spec["description"] = description
    return {
        "apiVersion": f"{naming.GROUP}/{naming.VERSION}",
        "kind": naming.KIND,
        "metadata": {"name": name},
        "spec": spec,
    }


def configmap_manifest(release: str = RELEASE, baseline: vocab.FaultSet = BASELINE) -> dict[str, Any]:
    env = baseline.to_env()
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": naming.faults_configmap_name(release),
            "labels": {
                naming.NAME_LABEL: "payflow",
                naming.INSTANCE_LABEL: release,
                naming.COMPONENT_LABEL: naming.FAULTS_COMPONENT,
            },
            "annotations": {naming.BASELINE_ANNOTATION: json.dumps(env, sort_keys=True)},
        },
        "data": {**env, "APP_UNRELATED_KEY": "kept"},
    }


def deployment_manifest(release: str = RELEASE) -> dict[str, Any]:
    labels = {naming.NAME_LABEL: "payflow", naming.INSTANCE_LABEL: release, naming.COMPONENT_LABEL: "api"}
    selector = {naming.NAME_LABEL: "payflow", naming.INSTANCE_LABEL: release}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": f"{release}-api", "labels": labels},
        "spec": {
            "replicas": 1,
            "revisionHistoryLimit": 10,
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {"labels": {**selector, naming.COMPONENT_LABEL: "api"}},
                "spec": {
                    "containers": [
                        {
                            "name": "api",
                            "image": "payflow-app:test",
                            "envFrom": [{"configMapRef": {"name": naming.faults_configmap_name(release)}}],
                        }
                    ]
                },
            },
        },
    }


@dataclass
class Cluster:
    """kubectl in one namespace, with the reads the tests assert on."""

    kubectl: Kubectl
    namespace: str

    def apply(self, manifest: dict[str, Any]) -> None:
        self.kubectl("apply", "-n", self.namespace, "-f", "-", input=json.dumps(manifest))

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        proc = self.kubectl("get", "-n", self.namespace, kind, name, "-o", "json", check=False)
        if proc.returncode != 0:
            if "NotFound" in proc.stderr:
                return None
            raise AssertionError(proc.stderr)
        result: dict[str, Any] = json.loads(proc.stdout)
        return result

    def incident(self, name: str) -> dict[str, Any] | None:
        return self.get(naming.PLURAL, name)

    def phase(self, name: str) -> str | None:
        body = self.incident(name)
        return ((body or {}).get("status") or {}).get("phase")

    def configmap_data(self, release: str = RELEASE) -> dict[str, str]:
        body = self.get("configmap", naming.faults_configmap_name(release))
        assert body is not None
        return dict(body.get("data") or {})

    def faults(self, release: str = RELEASE) -> vocab.FaultSet:
        return vocab.FaultSet.from_env(self.configmap_data(release))

    def delete(self, kind: str, name: str, wait: bool = False) -> None:
        self.kubectl("delete", "-n", self.namespace, kind, name, f"--wait={str(wait).lower()}")

    def label_namespace(self, opted_in: bool) -> None:
        value = f"{naming.OPT_IN_LABEL}={naming.OPT_IN_VALUE}" if opted_in else f"{naming.OPT_IN_LABEL}-"
        self.kubectl("label", "namespace", self.namespace, value, "--overwrite")

    def events(self, name: str) -> list[dict[str, Any]]:
        proc = self.kubectl(
            "get",
            "events",
            "-n",
            self.namespace,
            "--field-selector",
            f"involvedObject.name={name}",
            "-o",
            "json",
        )
        return list(json.loads(proc.stdout).get("items") or [])

    def event_reasons(self, name: str) -> set[str]:
        return {e.get("reason", "") for e in self.events(name)}


@pytest.fixture
def cluster(kubectl: Kubectl, namespace: str, crd: str) -> Iterator[Cluster]:
    """The test namespace, opted in to fault injection. Afterwards the incidents left in it lose
    any finalizer a test gave them (as an earlier operator did), so the namespace goes."""
    c = Cluster(kubectl, namespace)
    c.label_namespace(True)
    yield c
    names = kubectl("get", naming.PLURAL, "-n", namespace, "-o", "name", check=False).stdout.split()
    for name in names:
        kubectl(
            "patch",
            name,
            "-n",
            namespace,
            "--type=merge",
            "-p",
            '{"metadata":{"finalizers":null}}',
            check=False,
        )


@pytest.fixture
def release(cluster: Cluster) -> Cluster:
    """The faults ConfigMap and the app Deployment of release `payflow`, as the chart makes them."""
    cluster.apply(configmap_manifest())
    cluster.apply(deployment_manifest())
    return cluster


def expected(*incident_faults: dict[str, Any]) -> vocab.FaultSet:
    """The merge of the baseline and these incidents' faults."""
    sets = [("", BASELINE)] + [(f"i{n}", vocab.FaultSet.from_spec(f)) for n, f in enumerate(incident_faults)]
    return vocab.merge(sets).faults
