"""What the chart renders: the app's contract, the security of every container, the RBAC rules,
the uninstall hook, the CRD copy."""

from __future__ import annotations

import pytest

from payflow import naming
from tests.unit.helm.chart import (
    ALL_OPTIONS,
    CHART,
    REPO,
    VALUES_FILES,
    Manifest,
    container_env,
    expand,
    find,
    hook,
    of_component,
    one,
    pod_specs,
    render,
)

# Containers that answer no probe, and why.
NO_PROBES = {
    "cleanup": "the pre-delete Job runs to completion",
    "test-api": "the `helm test` Pod runs to completion",
}
# Containers with a liveness probe but no readiness probe, and why.
NO_READINESS = {"operator": "no Service sends it traffic", "loadgen": "a client: no traffic comes to it"}


def _selector_matches(selector: str, labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in (term.split("=", 1) for term in selector.split(",")))


@pytest.fixture(scope="module")
def everything() -> list[Manifest]:
    """Default values with every optional part switched on."""
    return render(values=ALL_OPTIONS)


def _app(manifests: list[Manifest], release: str = "payflow") -> Manifest:
    apps = [
        m
        for m in find(manifests, "Deployment")
        if _selector_matches(naming.app_selector(release), m["metadata"]["labels"])
    ]
    assert len(apps) == 1, [m["metadata"]["name"] for m in apps]
    return apps[0]


# --- security: every container ----------------------------------------------------------------


@pytest.mark.parametrize("which", [*VALUES_FILES, "all-options"])
def test_every_container_is_non_root_limited_and_probed(which: str) -> None:
    manifests = render(values=ALL_OPTIONS) if which == "all-options" else render([VALUES_FILES[which]])
    checked = 0
    for owner, spec in pod_specs(manifests):
        pod_sc = spec.get("securityContext") or {}
        assert spec.get("hostNetwork") is not True
        assert spec.get("hostPID") is not True
        for c in spec.get("initContainers", []) + spec["containers"]:
            where = f"{owner['kind']}/{owner['metadata']['name']} container {c['name']}"
            sc = {**pod_sc, **(c.get("securityContext") or {})}
            assert sc.get("runAsNonRoot") is True, where
            assert isinstance(sc.get("runAsUser"), int), where
            assert sc["runAsUser"] > 0, where
            assert sc.get("allowPrivilegeEscalation") is False, where
            assert sc.get("privileged") is not True, where
            assert sc.get("readOnlyRootFilesystem") is True, where
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], where
            assert not sc.get("capabilities", {}).get("add"), where
            assert sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", where
            resources = c.get("resources") or {}
            for part in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources.get(part) or {}), f"{where}: {part}"
            if c["name"] in NO_PROBES:
                assert hook(owner), f"{where}: only hooks run without probes"
            else:
                assert "livenessProbe" in c, where
                assert ("readinessProbe" in c) != (c["name"] in NO_READINESS), where
            checked += 1
    # app, postgresql, redis, operator, loadgen, cleanup job, test pod (fewer without options)
    assert checked >= (7 if which == "all-options" else 6)


def test_names_fit_dns_labels_and_objects_carry_the_standard_labels() -> None:
    release = "a-release-name-that-is-long-enough-to-need-truncating"
    manifests = render(values=ALL_OPTIONS, release=release)
    for m in manifests:
        name = m["metadata"]["name"]
        assert len(name) <= 63, name
        assert not name.endswith("-"), name
        labels = m["metadata"]["labels"]
        for key in ("name", "instance", "version", "managed-by", "component", "part-of"):
            assert f"app.kubernetes.io/{key}" in labels, f"{m['kind']}/{name} lacks {key}"
        assert labels[naming.INSTANCE_LABEL] == release


# --- the app --------------------------------------------------------------------------------


def test_the_app_deployment_keeps_the_contract(everything: list[Manifest]) -> None:
    app = _app(everything)
    template = app["spec"]["template"]
    assert _selector_matches(naming.app_selector("payflow"), template["metadata"]["labels"])
    assert set(app["spec"]["selector"]["matchLabels"]) == {
        naming.NAME_LABEL,
        naming.INSTANCE_LABEL,
        naming.COMPONENT_LABEL,
    }
    assert app["spec"]["replicas"] >= 1
    (c,) = template["spec"]["containers"]
    assert c["resources"]["limits"]["memory"]  # what turns the OOM fault into OOMKilled
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"http": 8080}
    assert (c["livenessProbe"]["httpGet"]["path"], c["livenessProbe"]["httpGet"]["port"]) == (
        "/health",
        "http",
    )
    assert (c["readinessProbe"]["httpGet"]["path"], c["readinessProbe"]["httpGet"]["port"]) == (
        "/ready",
        "http",
    )
    assert c["envFrom"] == [{"configMapRef": {"name": naming.faults_configmap_name("payflow")}}]
    env = {e["name"]: e for e in c["env"]}
    assert env["DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"]
    assert env["REDIS_URL"]["valueFrom"]["secretKeyRef"]["name"]
    assert env["PAYFLOW_RELEASE"]["value"] == "payflow"
    assert env["PAYFLOW_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert env["PAYFLOW_POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert {"/tmp"} <= {m["mountPath"] for m in c["volumeMounts"]}

    service = one(everything, "Service", app["metadata"]["name"])
    assert service["spec"]["selector"].items() <= template["metadata"]["labels"].items()
    assert [(p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [(80, "http")]


def test_the_database_url_secret_points_at_the_charts_postgresql(everything: list[Manifest]) -> None:
    import base64

    app = _app(everything)
    ref = next(
        e for e in app["spec"]["template"]["spec"]["containers"][0]["env"] if e["name"] == "DATABASE_URL"
    )
    secret = one(everything, "Secret", ref["valueFrom"]["secretKeyRef"]["name"])
    url = base64.b64decode(secret["data"][ref["valueFrom"]["secretKeyRef"]["key"]]).decode()
    password = base64.b64decode(secret["data"]["password"]).decode()
    statefulset = one(everything, "StatefulSet")
    assert url == f"postgresql://payflow:{password}@{statefulset['spec']['serviceName']}:5432/payflow"
    assert len(password) >= 32


def test_the_redis_url_secret_carries_the_password_redis_asks_for(everything: list[Manifest]) -> None:
    app = _app(everything)["spec"]["template"]["spec"]["containers"][0]
    redis = of_component(everything, "Deployment", "redis")
    (container,) = redis["spec"]["template"]["spec"]["containers"]
    env = container_env(container, everything)
    password = env["REDIS_PASSWORD"]
    assert len(password) >= 32
    assert env["REDISCLI_AUTH"] == password  # the readiness probe's redis-cli
    assert [expand(a, env) for a in container["args"]][-2:] == ["--requirepass", password]
    service = one(everything, "Service", redis["metadata"]["name"])
    host = service["metadata"]["name"]
    assert container_env(app, everything)["REDIS_URL"] == f"redis://:{password}@{host}:6379/0"


def test_the_app_may_only_read_its_faults_configmap_and_get_pods(everything: list[Manifest]) -> None:
    app = _app(everything)
    account = app["spec"]["template"]["spec"]["serviceAccountName"]
    bindings = [
        b
        for b in find(everything, "RoleBinding") + find(everything, "ClusterRoleBinding")
        if any(s["name"] == account for s in b["subjects"])
    ]
    assert [b["kind"] for b in bindings] == ["RoleBinding"]
    role = one(everything, "Role", bindings[0]["roleRef"]["name"])
    assert role["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["configmaps"],
            "resourceNames": [naming.faults_configmap_name("payflow")],
            "verbs": ["get", "list", "watch"],
        },
        # the fault history: this pod's container status, whether another replica's pod exists
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]},
    ]


# --- the operator -----------------------------------------------------------------------------


def _rules(role: Manifest) -> dict[tuple[str, str], set[str]]:
    out: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        assert "resourceNames" not in rule or rule["resourceNames"]
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                out.setdefault((group, resource), set()).update(rule["verbs"])
    return out


OPERATOR_NAMESPACED = {
    ("payflow.dev", "payflowincidents"): {"get", "list", "watch", "patch", "update"},
    ("payflow.dev", "payflowincidents/status"): {"get", "patch", "update"},
    ("", "configmaps"): {"get", "list", "watch", "patch", "update"},
    ("apps", "deployments"): {"get", "list", "watch", "patch"},
    ("", "events"): {"create", "patch"},
    ("events.k8s.io", "events"): {"create", "patch"},
}
OPERATOR_CLUSTER = {
    ("apiextensions.k8s.io", "customresourcedefinitions"): {"list", "watch"},
    ("", "namespaces"): {"get", "list", "watch"},
}


def test_the_operator_has_the_smallest_rbac(everything: list[Manifest]) -> None:
    operator = one(everything, "Deployment", "payflow-operator")
    account = operator["spec"]["template"]["spec"]["serviceAccountName"]
    assert operator["spec"]["strategy"] == {"type": "Recreate"}
    (c,) = operator["spec"]["template"]["spec"]["containers"]
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"health": 8080}
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["PAYFLOW_WATCH_NAMESPACES"] == "demo,shop"

    def bound(kind: str) -> list[Manifest]:
        found = []
        for b in find(everything, f"{kind}Binding"):
            if hook(b) is None and any(s["name"] == account for s in b["subjects"]):
                found.append(b)
        return found

    cluster_bindings = bound("ClusterRole")
    assert len(cluster_bindings) == 1
    assert _rules(one(everything, "ClusterRole", cluster_bindings[0]["roleRef"]["name"])) == OPERATOR_CLUSTER

    role_bindings = bound("Role")
    assert sorted(b["metadata"]["namespace"] for b in role_bindings) == ["demo", "shop"]
    for b in role_bindings:
        (role,) = [
            r
            for r in find(everything, "Role", b["roleRef"]["name"])
            if r["metadata"].get("namespace") == b["metadata"]["namespace"]
        ]
        assert _rules(role) == OPERATOR_NAMESPACED


def test_without_watch_namespaces_the_operator_serves_the_release_namespace() -> None:
    manifests = render()
    operator = one(manifests, "Deployment", "payflow-operator")
    env = {e["name"]: e.get("value") for e in operator["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["PAYFLOW_WATCH_NAMESPACES"] == "demo"
    roles = [r for r in find(manifests, "Role", "payflow-operator")]
    assert [r["metadata"].get("namespace", "demo") for r in roles] == ["demo"]


def test_no_role_grants_secrets_exec_or_wildcards(everything: list[Manifest]) -> None:
    for role in find(everything, "Role") + find(everything, "ClusterRole"):
        for rule in role["rules"]:
            assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"], role["metadata"]["name"]
            assert not {"secrets", "pods/exec", "pods/log", "serviceaccounts/token"} & set(rule["resources"])
            assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"])
            if "pods" in rule["resources"]:  # the app's fault history: get by name, nothing more
                assert role["metadata"]["name"] == "payflow-app"
                assert rule["verbs"] == ["get"]


def test_uninstall_runs_the_cleanup_job_before_anything_is_deleted(everything: list[Manifest]) -> None:
    job = one(everything, "Job")
    assert hook(job) == "pre-delete"
    spec = job["spec"]["template"]["spec"]
    assert spec["serviceAccountName"] == "payflow-operator"
    (c,) = spec["containers"]
    assert (
        c["image"]
        == one(everything, "Deployment", "payflow-operator")["spec"]["template"]["spec"]["containers"][0][
            "image"
        ]
    )
    assert c["command"] == [
        "payflow-operator",
        "cleanup",
        "--namespace",
        "demo",
        "--target",
        "payflow",
        "--timeout",
        "60",
    ]
    # Its extra right, deleting this namespace's incidents, exists only while the hook runs, and first.
    role = one(everything, "Role", "payflow-cleanup")
    binding = one(everything, "RoleBinding", "payflow-cleanup")
    for extra in (role, binding):
        assert hook(extra) == "pre-delete"
        assert int(extra["metadata"]["annotations"]["helm.sh/hook-weight"]) < int(
            job["metadata"]["annotations"]["helm.sh/hook-weight"]
        )
    assert _rules(role) == {
        ("payflow.dev", "payflowincidents"): {"get", "list", "watch", "delete", "patch", "update"},
        ("", "configmaps"): {"get", "patch"},
        ("apps", "deployments"): {"list", "patch"},
    }
    assert role["rules"][1]["resourceNames"] == [naming.faults_configmap_name("payflow")]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "payflow-operator", "namespace": "demo"}
    ]


def test_the_test_hook_calls_health_and_stats(everything: list[Manifest]) -> None:
    (pod,) = [m for m in find(everything, "Pod") if hook(m) == "test"]
    script = "\n".join(pod["spec"]["containers"][0]["command"])
    assert "/health" in script
    assert "/api/stats" in script
    assert "http://payflow:80" in script


def test_optional_parts_are_off_by_default_and_the_load_is_on() -> None:
    manifests = render()
    assert "ServiceMonitor" not in {m["kind"] for m in manifests}
    assert "Deployment" in [m["kind"] for m in manifests if m["metadata"]["name"].endswith("-loadgen")]
    off = render(values={"loadgen": {"enabled": False}})
    assert not [m for m in off if m["metadata"]["name"].endswith("-loadgen")]


def test_the_loadgen_targets_the_app_service(everything: list[Manifest]) -> None:
    loadgen = one(everything, "Deployment", "payflow-loadgen")
    command = loadgen["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[:3] == ["payflow-loadgen", "--target", "http://payflow:80"]
    monitor = one(everything, "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"


# --- network policies -------------------------------------------------------------------------

# The chart's data stores: component -> (workload kind, port).
STORES = {"postgresql": ("StatefulSet", 5432), "redis": ("Deployment", 6379)}
EXTERNAL_POSTGRESQL = {"postgresql": {"enabled": False}, "database": {"existingSecret": "x"}}
EXTERNAL_REDIS = {"redis": {"enabled": False, "externalUrl": "redis://h:6379/0"}}


def _pod_labels(manifests: list[Manifest]) -> dict[str, dict[str, str]]:
    """Each pod template's (or bare Pod's) labels, by "Kind/name" of its owner."""
    out = {}
    for owner, _ in pod_specs(manifests):
        meta = owner["metadata"] if owner["kind"] == "Pod" else owner["spec"]["template"]["metadata"]
        out[f"{owner['kind']}/{owner['metadata']['name']}"] = meta["labels"]
    return out


def _selected(match_labels: dict[str, str], manifests: list[Manifest]) -> list[str]:
    return sorted(
        where for where, labels in _pod_labels(manifests).items() if match_labels.items() <= labels.items()
    )


@pytest.mark.parametrize("which", ["default", "all-options"])
def test_only_the_app_may_reach_postgresql_and_redis(which: str) -> None:
    manifests = render(values=ALL_OPTIONS) if which == "all-options" else render()
    assert sorted(p["metadata"]["name"] for p in find(manifests, "NetworkPolicy")) == [
        "payflow-postgresql",
        "payflow-redis",
    ]
    app = _app(manifests)
    for component, (kind, port) in STORES.items():
        store = of_component(manifests, kind, component)
        policy = one(manifests, "NetworkPolicy", f"payflow-{component}")
        spec = policy["spec"]
        # It selects this store's pods and no other pod of the release.
        assert _selected(spec["podSelector"]["matchLabels"], manifests) == [
            f"{kind}/{store['metadata']['name']}"
        ]
        assert spec["policyTypes"] == ["Ingress"]
        (rule,) = spec["ingress"]
        # One peer, a podSelector alone (so the policy's namespace only), selecting the app's pods:
        # not the operator's, the load generator's, the hooks' or the other store's.
        (peer,) = rule["from"]
        assert set(peer) == {"podSelector"}
        assert _selected(peer["podSelector"]["matchLabels"], manifests) == [
            f"Deployment/{app['metadata']['name']}"
        ]
        assert rule["ports"] == [{"protocol": "TCP", "port": port}]
        (container,) = store["spec"]["template"]["spec"]["containers"]
        assert port in {p["containerPort"] for p in container["ports"]}
    if which == "all-options":
        for other in ("payflow-operator", "payflow-loadgen"):
            labels = one(manifests, "Deployment", other)["spec"]["template"]["metadata"]["labels"]
            for policy in find(manifests, "NetworkPolicy"):
                (peer,) = policy["spec"]["ingress"][0]["from"]
                assert not peer["podSelector"]["matchLabels"].items() <= labels.items(), other


def test_network_policies_can_be_switched_off() -> None:
    assert not find(render(values={"networkPolicy": {"enabled": False}}), "NetworkPolicy")


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (EXTERNAL_POSTGRESQL, ["payflow-redis"]),
        (EXTERNAL_REDIS, ["payflow-postgresql"]),
        ({**EXTERNAL_POSTGRESQL, **EXTERNAL_REDIS}, []),
    ],
    ids=["external-postgresql", "external-redis", "both-external"],
)
def test_no_network_policy_for_a_store_the_chart_does_not_run(
    values: dict[str, object], expected: list[str]
) -> None:
    manifests = render(values=values)
    assert sorted(p["metadata"]["name"] for p in find(manifests, "NetworkPolicy")) == expected


def test_extra_ingress_peers_are_allowed_into_both_stores() -> None:
    extra = [
        {"podSelector": {"matchLabels": {"app": "backup"}}},
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}},
    ]
    manifests = render(values={"networkPolicy": {"extraIngressFrom": extra}})
    policies = find(manifests, "NetworkPolicy")
    assert len(policies) == 2
    app_labels = _app(manifests)["spec"]["selector"]["matchLabels"]
    for policy in policies:
        (rule,) = policy["spec"]["ingress"]
        assert rule["from"] == [{"podSelector": {"matchLabels": app_labels}}, *extra]


# --- the CRD ----------------------------------------------------------------------------------


def test_the_charts_crd_is_an_identical_copy_of_crds() -> None:
    source = REPO / "crds" / "payflowincident.yaml"
    copy = CHART / "crds" / "payflowincident.yaml"
    assert copy.read_bytes() == source.read_bytes(), "run: .venv/bin/python helm/sync.py"
