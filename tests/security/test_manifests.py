"""The chart's rendered manifests, read as an attacker or an auditor would: every container
non-root, without privilege escalation or added capabilities, with CPU and memory limits; no
host namespaces, host paths or host ports; no credential in plain text outside the one Secret;
images pinned; and the values schema refuses the overrides that would undo any of it.

The per-container rules come from tests/unit/helm (rendering helpers); this module adds what
an audit asks beyond them and sums up the figures for docs/security.md."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from tests.unit.helm.chart import ALL_OPTIONS, VALUES_FILES, Manifest, find, pod_specs, render, template_text

RENDERINGS = {
    **{name: ([path], None) for name, path in VALUES_FILES.items()},
    "all-options": ([], ALL_OPTIONS),
}


def container_findings(manifests: list[Manifest]) -> tuple[int, list[str]]:
    """(containers checked, what is wrong with them): the pure rule set of this audit."""
    findings: list[str] = []
    checked = 0
    for owner, spec in pod_specs(manifests):
        where_pod = f"{owner['kind']}/{owner['metadata']['name']}"
        for flag in ("hostNetwork", "hostPID", "hostIPC"):
            if spec.get(flag):
                findings.append(f"{where_pod}: {flag}")
        for volume in spec.get("volumes") or []:
            if "hostPath" in volume:
                findings.append(f"{where_pod}: hostPath volume {volume['name']}")
        pod_sc = spec.get("securityContext") or {}
        for c in (spec.get("initContainers") or []) + spec["containers"]:
            checked += 1
            where = f"{where_pod} container {c['name']}"
            sc = {**pod_sc, **(c.get("securityContext") or {})}
            if sc.get("runAsNonRoot") is not True or not (
                isinstance(sc.get("runAsUser"), int) and sc["runAsUser"] > 0
            ):
                findings.append(f"{where}: may run as root")
            if sc.get("allowPrivilegeEscalation") is not False:
                findings.append(f"{where}: privilege escalation not disabled")
            if sc.get("privileged"):
                findings.append(f"{where}: privileged")
            caps = sc.get("capabilities") or {}
            if caps.get("drop") != ["ALL"] or caps.get("add"):
                findings.append(f"{where}: capabilities not dropped")
            if sc.get("readOnlyRootFilesystem") is not True:
                findings.append(f"{where}: writable root filesystem")
            if (sc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
                findings.append(f"{where}: no seccomp profile")
            limits = (c.get("resources") or {}).get("limits") or {}
            if not {"cpu", "memory"} <= set(limits):
                findings.append(f"{where}: no CPU or memory limit")
            for port in c.get("ports") or []:
                if "hostPort" in port:
                    findings.append(f"{where}: hostPort {port['hostPort']}")
            image = str(c.get("image", ""))
            tag = image.rsplit("/", 1)[-1].partition(":")[2]
            if not tag or tag == "latest":
                findings.append(f"{where}: image {image!r} not pinned to a version")
            for env in c.get("env") or []:
                value = str(env.get("value", ""))
                if "://" in value and "@" in value.split("://", 1)[1]:
                    findings.append(f"{where}: credentials in plain env {env['name']}")
    return checked, findings


@pytest.mark.parametrize("which", RENDERINGS)
def test_no_container_can_escalate_run_as_root_or_go_unbounded(which: str) -> None:
    files, values = RENDERINGS[which]
    checked, findings = container_findings(render(files, values))
    assert checked >= 6
    assert findings == []


SECRET_ENV = {"DATABASE_URL", "POSTGRES_PASSWORD", "REDIS_URL", "REDIS_PASSWORD", "REDISCLI_AUTH"}


def test_the_store_passwords_live_only_in_their_secrets() -> None:
    manifests = render(values=ALL_OPTIONS)
    secrets = find(manifests, "Secret")
    assert sorted(s["metadata"]["name"] for s in secrets) == ["payflow-postgresql", "payflow-redis"]
    for secret in secrets:
        password = base64.b64decode(secret["data"]["password"]).decode()
        assert len(password) >= 32
        others = [m for m in manifests if m is not secret]
        assert password not in json.dumps(others)  # not in an env value, an annotation, a ConfigMap
    for _, spec in pod_specs(manifests):
        for c in spec["containers"]:
            for env in c.get("env") or []:
                if env["name"] in SECRET_ENV:
                    assert "secretKeyRef" in env.get("valueFrom", {}), (c["name"], env["name"])


def test_nothing_is_exposed_outside_the_cluster_by_default() -> None:
    for service in find(render(values=ALL_OPTIONS), "Service"):
        assert service["spec"].get("type", "ClusterIP") == "ClusterIP", service["metadata"]["name"]


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ({"podSecurityContext": {"runAsNonRoot": False}}, "runAsNonRoot"),
        ({"podSecurityContext": {"runAsUser": 0}}, "runAsUser"),
        ({"securityContext": {"allowPrivilegeEscalation": True}}, "allowPrivilegeEscalation"),
        ({"securityContext": {"privileged": True}}, "privileged"),
        ({"securityContext": {"capabilities": {"add": ["NET_ADMIN"]}}}, "add"),
        ({"app": {"resources": {"limits": None}}}, "limits"),
    ],
    ids=["runAsNonRoot-false", "root-uid", "escalation", "privileged", "add-capability", "no-limits"],
)
def test_the_values_schema_refuses_insecure_overrides(override: dict[str, Any], named: str) -> None:
    proc = template_text(values=override, check=False)
    assert proc.returncode != 0, f"the chart rendered with {override}"
    assert named in proc.stderr, proc.stderr
