"""What the installed ServiceAccounts may do, asked of the API server (`kubectl auth can-i --as`)."""

from __future__ import annotations

import pytest

from payflow import naming
from tests.conftest import Kubectl
from tests.integration.helm.conftest import Release, can_i

INCIDENTS = f"{naming.PLURAL}.{naming.GROUP}"

# What an incident needs, in the watched namespace.
OPERATOR_MAY = [
    ("get", INCIDENTS),
    ("list", INCIDENTS),
    ("watch", INCIDENTS),
    ("patch", INCIDENTS),  # kopf's progress annotations; removing an earlier operator's finalizer
    ("patch", INCIDENTS, "--subresource=status"),
    ("update", INCIDENTS, "--subresource=status"),
    ("get", "configmaps"),
    ("watch", "configmaps"),
    ("patch", "configmaps"),
    ("list", "deployments.apps"),
    ("patch", "deployments.apps"),  # delivery: rollout
    ("create", "events"),
    ("create", "events.events.k8s.io"),
]
OPERATOR_MAY_NOT = [
    ("get", "secrets"),
    ("list", "secrets"),
    ("delete", "pods"),
    ("create", "pods"),
    ("create", "pods/exec"),
    ("delete", INCIDENTS),  # only users end incidents (and the uninstall hook, while it runs)
    ("delete", "configmaps"),
    ("create", "configmaps"),
    ("delete", "deployments.apps"),
    ("update", "deployments.apps"),
    ("create", "serviceaccounts/token"),
    ("create", "roles.rbac.authorization.k8s.io"),
]
# Cluster-scoped: only what discovery and the namespace opt-in label need.
OPERATOR_CLUSTER_MAY = [
    ("list", "customresourcedefinitions.apiextensions.k8s.io"),
    ("watch", "customresourcedefinitions.apiextensions.k8s.io"),
    ("get", "namespaces"),
    ("watch", "namespaces"),
]
OPERATOR_CLUSTER_MAY_NOT = [
    ("patch", "namespaces"),
    ("delete", "namespaces"),
    ("create", "customresourcedefinitions.apiextensions.k8s.io"),
    ("create", "clusterroles.rbac.authorization.k8s.io"),
    ("list", "nodes"),
]


def _account(release: Release, component: str) -> str:
    return f"system:serviceaccount:{release.namespace}:{release.service_account(component)}"


@pytest.mark.parametrize("check", OPERATOR_MAY, ids=" ".join)
def test_the_operator_may_do_what_an_incident_needs(
    installed: Release, kubectl: Kubectl, check: tuple[str, ...]
) -> None:
    verb, resource, *extra = check
    assert can_i(
        kubectl,
        _account(installed, "operator"),
        verb,
        resource,
        "-n",
        installed.namespace,
        *extra,
    )


@pytest.mark.parametrize("check", OPERATOR_MAY_NOT, ids=" ".join)
def test_the_operator_may_not_do_more(installed: Release, kubectl: Kubectl, check: tuple[str, ...]) -> None:
    verb, resource, *extra = check
    assert not can_i(
        kubectl,
        _account(installed, "operator"),
        verb,
        resource,
        "-n",
        installed.namespace,
        *extra,
    )


@pytest.mark.parametrize("check", OPERATOR_CLUSTER_MAY, ids=" ".join)
def test_the_operators_cluster_rights(installed: Release, kubectl: Kubectl, check: tuple[str, ...]) -> None:
    assert can_i(kubectl, _account(installed, "operator"), *check)


@pytest.mark.parametrize("check", OPERATOR_CLUSTER_MAY_NOT, ids=" ".join)
def test_the_operator_has_no_other_cluster_rights(
    installed: Release, kubectl: Kubectl, check: tuple[str, ...]
) -> None:
    assert not can_i(kubectl, _account(installed, "operator"), *check)


@pytest.mark.parametrize(
    "check",
    [
        ("get", INCIDENTS),
        ("patch", "configmaps"),
        ("patch", "deployments.apps"),
        ("create", "events"),
        ("get", "secrets"),
    ],
    ids=" ".join,
)
def test_the_operator_may_not_touch_namespaces_outside_its_scope(
    installed: Release, kubectl: Kubectl, other_namespace: str, check: tuple[str, str]
) -> None:
    assert not can_i(kubectl, _account(installed, "operator"), *check, "-n", other_namespace)


def test_watch_namespaces_extend_the_operators_scope(
    fresh_release: Release, kubectl: Kubectl, other_namespace: str
) -> None:
    account = _account(fresh_release, "operator")
    assert not can_i(kubectl, account, "patch", "configmaps", "-n", other_namespace)

    fresh_release.upgrade(
        values={"operator": {"watchNamespaces": [fresh_release.namespace, other_namespace]}}
    )

    for ns in (fresh_release.namespace, other_namespace):
        assert can_i(kubectl, account, "patch", "configmaps", "-n", ns)
        assert can_i(kubectl, account, "watch", INCIDENTS, "-n", ns)
        assert not can_i(kubectl, account, "get", "secrets", "-n", ns)


def test_the_app_may_get_and_watch_only_its_faults_configmap(installed: Release, kubectl: Kubectl) -> None:
    account = _account(installed, naming.APP_COMPONENT)
    ns = installed.namespace
    own = f"configmaps/{naming.faults_configmap_name(installed.name)}"

    assert can_i(kubectl, account, "get", own, "-n", ns)
    assert can_i(kubectl, account, "watch", own, "-n", ns)
    assert can_i(kubectl, account, "list", own, "-n", ns)  # a watch with fieldSelector metadata.name

    assert not can_i(kubectl, account, "patch", own, "-n", ns)
    assert not can_i(kubectl, account, "delete", own, "-n", ns)
    assert not can_i(kubectl, account, "get", "configmaps/kube-root-ca.crt", "-n", ns)
    assert not can_i(kubectl, account, "list", "configmaps", "-n", ns)
    assert not can_i(kubectl, account, "watch", "configmaps", "-n", ns)
    assert not can_i(kubectl, account, "get", "secrets", "-n", ns)
    assert not can_i(kubectl, account, "list", "pods", "-n", ns)
    assert not can_i(kubectl, account, "get", INCIDENTS, "-n", ns)
