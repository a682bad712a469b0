"""The operator needs no more than the RBAC the chart grants it: with a ServiceAccount token
bound to exactly these rules it injects, stamps a rollout, posts Events and clears."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from kubernetes import client

from payflow import naming
from payflow.devstack.stack import LocalStack
from tests.integration.operator.conftest import Cluster, OperatorFactory, expected, incident
from tests.support import wait_for

CLUSTER_RULES = [
    {
        "apiGroups": ["apiextensions.k8s.io"],
        "resources": ["customresourcedefinitions"],
        "verbs": ["list", "watch"],
    },
    {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "list", "watch"]},
]
NAMESPACE_RULES = [
    {
        "apiGroups": [naming.GROUP],
        "resources": [naming.PLURAL],
        "verbs": ["get", "list", "watch", "patch", "update"],
    },
    {
        "apiGroups": [naming.GROUP],
        "resources": [f"{naming.PLURAL}/status"],
        "verbs": ["get", "patch", "update"],
    },
    {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch", "patch", "update"]},
    {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "list", "watch", "patch"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]},
    {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]},
]


def _service_account_kubeconfig(kube_api: Any, kube_stack: LocalStack, namespace: str, path: Path) -> Path:
    core = client.CoreV1Api(kube_api)
    rbac = client.RbacAuthorizationV1Api(kube_api)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "payflow-operator"}})
    subject = [{"kind": "ServiceAccount", "name": "payflow-operator", "namespace": namespace}]
    cluster_name = f"payflow-operator-{uuid.uuid4().hex[:8]}"
    rbac.create_cluster_role({"metadata": {"name": cluster_name}, "rules": CLUSTER_RULES})
    rbac.create_cluster_role_binding(
        {
            "metadata": {"name": cluster_name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": cluster_name},
            "subjects": subject,
        }
    )
    rbac.create_namespaced_role(
        namespace, {"metadata": {"name": "payflow-operator"}, "rules": NAMESPACE_RULES}
    )
    rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": "payflow-operator"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "payflow-operator"},
            "subjects": subject,
        },
    )
    token = core.create_namespaced_service_account_token(
        "payflow-operator", namespace, {"spec": {"expirationSeconds": 3600}}
    ).status.token
    return kube_stack.write_token_kubeconfig(path, token, namespace)


def test_operator_works_with_exactly_the_charts_rbac(
    operator_factory: OperatorFactory, release: Cluster, kube_api: Any, kube_stack: LocalStack, tmp_path: Path
) -> None:
    kubeconfig = _service_account_kubeconfig(
        kube_api, kube_stack, release.namespace, tmp_path / "sa.kubeconfig"
    )
    operator = operator_factory(kubeconfig)

    release.apply(incident("rbac-live", {"latency": {"delayMs": 50}}))
    release.apply(incident("rbac-rollout", {"oom": {}}, delivery="rollout"))
    wait_for(lambda: release.faults() == expected({"latency": {"delayMs": 50}}, {"oom": {}}), 10, "injected")
    wait_for(lambda: release.phase("rbac-rollout") == "Active", 10, "Active")
    deployment = release.get("deployment", "payflow-api")
    assert deployment is not None
    assert naming.DIGEST_ANNOTATION in deployment["spec"]["template"]["metadata"]["annotations"]
    wait_for(lambda: "Injected" in release.event_reasons("rbac-live"), 10, "Events posted")

    release.delete(naming.PLURAL, "rbac-rollout", wait=True)
    release.delete(naming.PLURAL, "rbac-live", wait=True)
    wait_for(lambda: release.faults() == expected(), 5, "the baseline back")
    wait_for(lambda: "Cleared" in release.event_reasons("payflow-api"), 10, "Cleared events posted")
    assert "Forbidden" not in operator.process.log_tail(400)
    assert "forbidden" not in operator.process.log_tail(400)
