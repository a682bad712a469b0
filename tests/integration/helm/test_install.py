"""The chart on a real API server: server-side dry run, install, the seed's upgrades, uninstall."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
import yaml

from payflow import naming
from payflow.faults import FaultSet
from tests.conftest import Kubectl
from tests.integration.helm.conftest import Release
from tests.support import wait_for
from tests.unit.helm.chart import VALUES_FILES, template_text

CLUSTER_SCOPED = {"ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "Namespace"}


@pytest.mark.parametrize("which", VALUES_FILES)
def test_the_api_server_accepts_every_rendered_object(which: str, kubectl: Kubectl, namespace: str) -> None:
    files: list[Path | None] = [VALUES_FILES[which]]
    text = template_text(files, namespace=namespace, extra=["--include-crds"]).stdout
    rendered = [doc for doc in yaml.safe_load_all(text) if doc]

    proc = kubectl("apply", "--dry-run=server", "-n", namespace, "-f", "-", "-o", "json", input=text)

    accepted = json.loads(proc.stdout)
    items = accepted["items"] if accepted.get("kind") == "List" else [accepted]
    assert sorted((i["kind"], i["metadata"]["name"]) for i in items) == sorted(
        (m["kind"], m["metadata"]["name"]) for m in rendered
    )
    assert "CustomResourceDefinition" in {i["kind"] for i in items}


def _exists(release: Release, kind: str, name: str) -> bool:
    return release.get(kind, name, namespaced=kind not in CLUSTER_SCOPED) is not None


def test_install_creates_every_object(installed: Release, kubectl: Kubectl) -> None:
    manifests = installed.manifests()
    kinds = {m["kind"] for m in manifests}
    assert {"Deployment", "StatefulSet", "Service", "Secret", "ConfigMap", "Role", "ClusterRole"} <= kinds
    # One NetworkPolicy per data store, named like its workload (the loop below checks it exists).
    assert sorted(m["metadata"]["name"] for m in manifests if m["kind"] == "NetworkPolicy") == sorted(
        installed.workload(store)["metadata"]["name"] for store in ("postgresql", "redis")
    )
    for m in manifests:
        kind, name = m["kind"], m["metadata"]["name"]
        body = installed.get(kind, name, namespaced=kind not in CLUSTER_SCOPED)
        assert body is not None, f"{kind}/{name} was not created"
        assert body["metadata"]["annotations"]["meta.helm.sh/release-name"] == installed.name

    # NOTES.txt tells the next commands.
    notes = installed.helm("status", installed.name, "-n", installed.namespace).stdout
    assert f"kubectl -n {installed.namespace} apply -f examples/incidents/latency.yaml" in notes
    assert f"kubectl -n {installed.namespace} get pfi" in notes
    assert "values-buggy.yaml" in notes

    # The CRD from the chart's crds/ is there and served.
    crd = installed.get("crd", f"{naming.PLURAL}.{naming.GROUP}", namespaced=False)
    assert crd is not None
    assert {c["type"]: c["status"] for c in crd["status"]["conditions"]}["Established"] == "True"

    # The controllers act on it: the app's pods exist (Pending: this API server has no nodes)
    # and the PostgreSQL volume is claimed.
    app = installed.workload(naming.APP_COMPONENT)

    def app_pods() -> list[str] | None:
        out = kubectl(
            "get", "pods", "-n", installed.namespace, "-l", naming.app_selector(installed.name), "-o", "json"
        )
        pods = json.loads(out.stdout)["items"]
        return [p["status"]["phase"] for p in pods] if len(pods) == app["spec"]["replicas"] else None

    assert set(wait_for(app_pods, 30, "the app's pods")) == {"Pending"}
    wait_for(
        lambda: json.loads(kubectl("get", "pvc", "-n", installed.namespace, "-o", "json").stdout)["items"],
        30,
        "the PostgreSQL volume claim",
    )


def _passwords(release: Release) -> dict[str, str]:
    """The generated PostgreSQL and Redis passwords, from their Secrets."""
    found = {}
    for component in ("postgresql", "redis"):
        secret = release.get("secret", release.workload(component)["metadata"]["name"])
        assert secret is not None
        found[component] = base64.b64decode(secret["data"]["password"]).decode()
    return found


def _app_replicasets(release: Release, kubectl: Kubectl) -> dict[str, str]:
    out = kubectl(
        "get", "replicasets", "-n", release.namespace, "-l", naming.app_selector(release.name), "-o", "json"
    )
    return {
        rs["metadata"]["name"]: rs["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/version"]
        for rs in json.loads(out.stdout)["items"]
    }


def _app_version(release: Release) -> str:
    app = release.get("deployment", release.workload(naming.APP_COMPONENT)["metadata"]["name"])
    assert app is not None
    version: str = app["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/version"]
    return version


def test_the_seeds_bad_deploy_and_rollback(fresh_release: Release, kubectl: Kubectl) -> None:
    passwords = _passwords(fresh_release)
    assert not FaultSet.from_env(fresh_release.faults_configmap())
    wait_for(lambda: len(_app_replicasets(fresh_release, kubectl)) == 1, 30, "the first ReplicaSet")
    good = _app_version(fresh_release)

    fresh_release.upgrade([VALUES_FILES["buggy"]])

    assert "oom" in FaultSet.from_env(fresh_release.faults_configmap())

    # A new version: a new ReplicaSet, as a real deploy makes.
    def two_replicasets() -> dict[str, str] | None:
        found = _app_replicasets(fresh_release, kubectl)
        return found if len(found) == 2 else None

    versions = wait_for(two_replicasets, 30, "a new ReplicaSet")
    assert set(versions.values()) == {good, _app_version(fresh_release)}
    assert _app_version(fresh_release) != good
    assert _passwords(fresh_release) == passwords  # both stores keep their passwords across upgrades

    fresh_release.upgrade([VALUES_FILES["lkg"]])

    assert not FaultSet.from_env(fresh_release.faults_configmap())
    assert _app_version(fresh_release) == good
    assert _passwords(fresh_release) == passwords


def test_uninstall_removes_every_object_but_the_crd(fresh_release: Release) -> None:
    manifests = fresh_release.manifests()

    fresh_release.uninstall()

    def left() -> list[str]:
        return [
            f"{m['kind']}/{m['metadata']['name']}"
            for m in manifests
            if _exists(fresh_release, m["kind"], m["metadata"]["name"])
        ]

    wait_for(lambda: not left(), 30, "every object to go")
    # Helm never deletes a CRD: other releases' incidents may still use it.
    assert fresh_release.get("crd", f"{naming.PLURAL}.{naming.GROUP}", namespaced=False) is not None
