"""Smoke tests through the real local stack: what a user of each server would see."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
import redis
from kubernetes import client, watch

from payflow.devstack.stack import LocalStack
from tests.conftest import Kubectl
from tests.support import wait_for

CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.smoke.payflow.dev}
spec:
  group: smoke.payflow.dev
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget, shortNames: [wdg]}
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              properties:
                size: {type: integer, minimum: 1}
      additionalPrinterColumns:
        - {name: Size, type: integer, jsonPath: .spec.size}
"""


def test_a_watch_delivers_a_configmap_change(kube_api: Any, namespace: str) -> None:
    core = client.CoreV1Api(kube_api)
    cm = core.create_namespaced_config_map(
        namespace,
        client.V1ConfigMap(metadata=client.V1ObjectMeta(name="faults"), data={"INJECT_OOM": "false"}),
    )
    core.patch_namespaced_config_map("faults", namespace, {"data": {"INJECT_OOM": "true"}})
    # A watch from the version the client last saw delivers the change it missed.
    w = watch.Watch()
    events = []
    for ev in w.stream(
        core.list_namespaced_config_map,
        namespace,
        field_selector="metadata.name=faults",
        resource_version=cm.metadata.resource_version,
        timeout_seconds=10,
    ):
        events.append(ev)
        w.stop()
    assert [e["type"] for e in events] == ["MODIFIED"]
    assert events[0]["object"].data == {"INJECT_OOM": "true"}


def test_a_crd_is_served_and_kubectl_gets_its_objects(kubectl: Kubectl, namespace: str) -> None:
    kubectl("apply", "-f", "-", input=CRD)
    kubectl("wait", "--for=condition=Established", "crd/widgets.smoke.payflow.dev", "--timeout=30s")
    kubectl(
        "apply",
        "-n",
        namespace,
        "-f",
        "-",
        input="apiVersion: smoke.payflow.dev/v1\nkind: Widget\nmetadata: {name: w1}\nspec: {size: 3}\n",
    )
    table = kubectl("get", "wdg", "-n", namespace).stdout
    assert table.split("\n")[0].split() == ["NAME", "SIZE"]
    assert table.split("\n")[1].split()[:2] == ["w1", "3"]
    bad = kubectl(
        "apply",
        "-n",
        namespace,
        "-f",
        "-",
        check=False,
        input="apiVersion: smoke.payflow.dev/v1\nkind: Widget\nmetadata: {name: w2}\nspec: {size: 0}\n",
    )
    assert bad.returncode != 0
    assert "spec.size" in bad.stderr


def test_rbac_limits_a_service_account_and_its_token_works(
    kubectl: Kubectl, kube_stack: LocalStack, namespace: str, tmp_path: Path
) -> None:
    kubectl("create", "serviceaccount", "reader", "-n", namespace)
    kubectl("create", "role", "cm-reader", "--verb=get,list,watch", "--resource=configmaps", "-n", namespace)
    kubectl(
        "create",
        "rolebinding",
        "cm-reader",
        "--role=cm-reader",
        f"--serviceaccount={namespace}:reader",
        "-n",
        namespace,
    )
    who = f"system:serviceaccount:{namespace}:reader"

    def can(verb: str, resource: str, ns: str = namespace) -> str:
        return kubectl("auth", "can-i", verb, resource, "-n", ns, "--as", who, check=False).stdout.strip()

    assert can("get", "configmaps") == "yes"
    assert can("watch", "configmaps") == "yes"
    assert can("get", "secrets") == "no"
    assert can("delete", "pods") == "no"
    assert can("get", "configmaps", ns="default") == "no"

    # A real token, signed by the API server's service-account key, authenticates as the account.
    kubectl("create", "configmap", "visible", "--from-literal=k=v", "-n", namespace)
    token = kubectl("create", "token", "reader", "-n", namespace, "--duration=10m").stdout.strip()
    as_sa = str(kube_stack.write_token_kubeconfig(tmp_path / "sa.kubeconfig", token, namespace))
    allowed = kubectl("--kubeconfig", as_sa, "get", "configmaps", "-o", "name")
    assert "configmap/visible" in allowed.stdout.split()
    denied = kubectl("--kubeconfig", as_sa, "get", "secrets", check=False)
    assert denied.returncode != 0
    assert "forbidden" in denied.stderr.lower()
    assert f'"{who}"' in denied.stderr


def test_a_deployment_makes_a_replicaset(kube_api: Any, namespace: str) -> None:
    labels = {"app": "smoke"}
    apps = client.AppsV1Api(kube_api)
    apps.create_namespaced_deployment(
        namespace,
        client.V1Deployment(
            metadata=client.V1ObjectMeta(name="smoke"),
            spec=client.V1DeploymentSpec(
                replicas=1,
                selector=client.V1LabelSelector(match_labels=labels),
                template=client.V1PodTemplateSpec(
                    metadata=client.V1ObjectMeta(labels=labels),
                    spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="example/none:1")]),
                ),
            ),
        ),
    )

    def replicasets() -> list[Any]:
        return [
            rs
            for rs in apps.list_namespaced_replica_set(namespace).items
            if any(o.kind == "Deployment" and o.name == "smoke" for o in rs.metadata.owner_references or [])
        ]

    rs = wait_for(replicasets, timeout=20, what="the Deployment's ReplicaSet")
    assert rs[0].metadata.annotations["deployment.kubernetes.io/revision"] == "1"
    # With no nodes, the pod exists and stays Pending: the controller manager really runs.
    core = client.CoreV1Api(kube_api)
    pods = wait_for(lambda: core.list_namespaced_pod(namespace).items, timeout=20, what="the pod")
    assert pods[0].status.phase == "Pending"


def test_namespaces_get_their_default_service_account(kube_api: Any, namespace: str) -> None:
    core = client.CoreV1Api(kube_api)
    sa = wait_for(
        lambda: core.read_namespaced_service_account("default", namespace), timeout=20, what="default SA"
    )
    assert sa.metadata.name == "default"


def test_kubectl_reports_the_pinned_server_version(kubectl: Kubectl) -> None:
    from payflow.devstack.tools import pinned_versions

    version = json.loads(kubectl("version", "-o", "json").stdout)
    assert version["serverVersion"]["gitVersion"] == pinned_versions()["KUBERNETES_VERSION"]
    assert kubectl("get", "--raw", "/readyz").stdout.strip() == "ok"


def test_postgres_answers_a_query(postgres_url: str) -> None:
    with psycopg.connect(postgres_url) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS smoke (id int PRIMARY KEY, amount numeric(12, 2))")
        conn.execute("INSERT INTO smoke VALUES (1, 10.25) ON CONFLICT (id) DO NOTHING")
        row = conn.execute(
            "SELECT amount, current_database(), current_setting('server_version_num') FROM smoke"
        ).fetchone()
    assert row is not None
    assert str(row[0]) == "10.25"
    assert row[1] == "payflow"
    assert int(row[2]) >= 150000


def test_postgres_refuses_a_wrong_password(postgres_url: str) -> None:
    import pytest

    bad = postgres_url.replace("postgres:", "postgres:wrong", 1)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(bad, connect_timeout=5)


def test_redis_round_trip(redis_url: str) -> None:
    r = redis.Redis.from_url(redis_url)
    r.set("smoke:key", "value", ex=60)
    assert r.get("smoke:key") == b"value"
    assert r.config_get("save") == {"save": ""}  # a cache: no persistence
    r.close()
