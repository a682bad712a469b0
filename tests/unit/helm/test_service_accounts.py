"""Pods get only what they use: an API token only in the pods that call the Kubernetes API.

The app watches its faults ConfigMap, the operator and its uninstall Job act on incidents: they
keep a token. PostgreSQL, Redis and the load generator never call the API: each runs as a
ServiceAccount of its own, bound to no Role, that mounts no token, and its pod spec says so
too (either alone would do; both is what a reader of either sees). The `helm test` Pod mounts
none either. Every object of the chart names the release namespace, so that `helm template |
kubectl apply` puts nothing into another one."""

from __future__ import annotations

from typing import Any

import pytest

from payflow import naming
from tests.unit.helm.chart import ALL_OPTIONS, VALUES_FILES, Manifest, find, of_component, pod_specs, render

# component label -> (workload kind, calls the API, why)
COMPONENTS = {
    naming.APP_COMPONENT: ("Deployment", True, "watches its faults ConfigMap"),
    "operator": ("Deployment", True, "watches incidents, patches ConfigMaps and Deployments"),
    "cleanup": ("Job", True, "deletes the incidents at helm uninstall"),
    "postgresql": ("StatefulSet", False, "a database"),
    "redis": ("Deployment", False, "a cache"),
    "loadgen": ("Deployment", False, "an HTTP client of the app"),
    "test": ("Pod", False, "an HTTP client of the app (helm test)"),
}
# With their own tokenless ServiceAccount (the helm test Pod is a hook: the namespace's default).
OWN_ACCOUNT = {"postgresql", "redis", "loadgen"}
CLUSTER_SCOPED = {"ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}


@pytest.fixture(scope="module")
def everything() -> list[Manifest]:
    return render(values=ALL_OPTIONS)


def _spec(owner: Manifest) -> dict[str, Any]:
    spec: dict[str, Any] = owner["spec"] if owner["kind"] == "Pod" else owner["spec"]["template"]["spec"]
    return spec


def _account(manifests: list[Manifest], spec: dict[str, Any]) -> Manifest | None:
    name = spec.get("serviceAccountName", "default")
    found = find(manifests, "ServiceAccount", name)
    return found[0] if found else None


def mounts_token(manifests: list[Manifest], spec: dict[str, Any]) -> bool:
    """What the kubelet does: the pod spec's setting wins, then its ServiceAccount's, then yes."""
    if "automountServiceAccountToken" in spec:
        return bool(spec["automountServiceAccountToken"])
    account = _account(manifests, spec)
    return bool((account or {}).get("automountServiceAccountToken", True))


def _bound_accounts(manifests: list[Manifest]) -> set[str]:
    return {
        s["name"]
        for m in manifests
        if m["kind"] in {"RoleBinding", "ClusterRoleBinding"}
        for s in m.get("subjects") or []
        if s["kind"] == "ServiceAccount"
    }


@pytest.mark.parametrize("component", COMPONENTS)
def test_a_token_only_where_the_api_is_called(everything: list[Manifest], component: str) -> None:
    kind, calls_api, why = COMPONENTS[component]
    owner = of_component(everything, kind, component)
    spec = _spec(owner)
    assert mounts_token(everything, spec) is calls_api, f"{component} ({why})"
    account = _account(everything, spec)
    if calls_api:
        # Its own account, with a binding: the token is there because it is used.
        assert account is not None, component
        assert account["metadata"]["name"] in _bound_accounts(everything), component
    else:
        assert spec["automountServiceAccountToken"] is False, component
    if component in OWN_ACCOUNT:
        assert account is not None, f"{component} runs as the namespace's default ServiceAccount"
        assert account["metadata"]["name"] == owner["metadata"]["name"]
        assert account["metadata"]["labels"][naming.COMPONENT_LABEL] == component
        assert account["automountServiceAccountToken"] is False
        assert account["metadata"]["name"] not in _bound_accounts(everything), (
            f"{component} is bound to a Role"
        )


@pytest.mark.parametrize("which", [*VALUES_FILES, "all-options"])
def test_every_pod_of_the_chart_is_in_the_table(which: str) -> None:
    manifests = render(values=ALL_OPTIONS) if which == "all-options" else render([VALUES_FILES[which]])
    with_token = set()
    for owner, spec in pod_specs(manifests):
        component = owner["metadata"]["labels"][naming.COMPONENT_LABEL]
        assert component in COMPONENTS, f"{owner['kind']}/{owner['metadata']['name']}: decide on its token"
        if mounts_token(manifests, spec):
            with_token.add(component)
    assert with_token == {c for c, (_, calls_api, _) in COMPONENTS.items() if calls_api}


def test_every_service_account_of_the_chart_says_whether_it_mounts_a_token(
    everything: list[Manifest],
) -> None:
    accounts = {
        a["metadata"]["name"]: a["automountServiceAccountToken"] for a in find(everything, "ServiceAccount")
    }
    assert accounts == {
        "payflow-app": True,
        "payflow-operator": True,
        "payflow-postgresql": False,
        "payflow-redis": False,
        "payflow-loadgen": False,
    }


def test_no_tokenless_account_without_its_component() -> None:
    external = {
        "postgresql": {"enabled": False},
        "database": {"existingSecret": "x"},
        "redis": {"enabled": False, "externalUrl": "redis://h:6379/0"},
        "loadgen": {"enabled": False},
    }
    names = {a["metadata"]["name"] for a in find(render(values=external), "ServiceAccount")}
    assert names == {"payflow-app", "payflow-operator"}


@pytest.mark.parametrize("namespace", ["demo", "shop"])
def test_every_object_names_the_release_namespace(namespace: str) -> None:
    watched = ["demo", "shop", "other"]
    manifests = render(values={**ALL_OPTIONS, "operator": {"watchNamespaces": watched}}, namespace=namespace)
    for m in manifests:
        where = f"{m['kind']}/{m['metadata']['name']}"
        if m["kind"] in CLUSTER_SCOPED:
            assert "namespace" not in m["metadata"], where
        elif (
            m["kind"] in {"Role", "RoleBinding"}
            and m["metadata"]["labels"][naming.COMPONENT_LABEL] == "operator"
        ):
            assert m["metadata"]["namespace"] in watched, where  # the operator's, one per watched namespace
        else:
            assert m["metadata"].get("namespace") == namespace, where


def test_no_pod_gets_docker_link_variables(everything: list[Manifest]) -> None:
    # Found on the node: the Service `payflow` made the kubelet set PAYFLOW_PORT=tcp://10.96.x.y:80
    # in every pod of the namespace, and the app (settings prefix PAYFLOW_) crashed reading it as
    # its port. No pod of the chart needs those variables: DNS names the Services.
    pods = list(pod_specs(everything))
    assert pods
    for owner, spec in pods:
        assert spec.get("enableServiceLinks") is False, owner["metadata"]["name"]
