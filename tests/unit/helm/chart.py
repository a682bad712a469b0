"""Render the chart with the pinned helm and read what it makes (shared by the helm tests)."""

from __future__ import annotations

import base64
import copy
import os
import re
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from payflow import naming
from payflow.devstack import tools

REPO = Path(__file__).resolve().parents[3]
CHART = REPO / "helm" / "payflow"
VALUES_FILES = {"default": None, "buggy": CHART / "values-buggy.yaml", "lkg": CHART / "values-lkg.yaml"}

Manifest = dict[str, Any]

# Everything that may come out of the chart with every option on, in a namespace "demo".
ALL_OPTIONS: dict[str, Any] = {
    "loadgen": {"enabled": True},
    "serviceMonitor": {"enabled": True},
    "operator": {"watchNamespaces": ["demo", "shop"]},
    "networkPolicy": {"enabled": True},  # the default; here so that the list stays complete
}


@cache
def helm_binary() -> str:
    return str(tools.find("helm").path)


@cache
def _helm_home() -> str:
    # helm's own config/cache/data in a throwaway place, never the user's ~/.config/helm.
    return tempfile.mkdtemp(prefix="payflow-helm-")


def helm_env(kubeconfig: Path | None = None) -> dict[str, str]:
    home = _helm_home()
    env = {
        **os.environ,
        "HELM_CONFIG_HOME": f"{home}/config",
        "HELM_CACHE_HOME": f"{home}/cache",
        "HELM_DATA_HOME": f"{home}/data",
    }
    env.pop("KUBECONFIG", None)
    if kubeconfig is not None:
        env["KUBECONFIG"] = str(kubeconfig)
    return env


def helm(
    *args: str, kubeconfig: Path | None = None, check: bool = True, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [helm_binary(), *args],
        env=helm_env(kubeconfig),
        capture_output=True,
        text=True,
        input=input,
        timeout=120,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def values_args(files: Sequence[Path | None] = (), values: Mapping[str, Any] | None = None) -> list[str]:
    """-f arguments: the given files, then ``values`` (as a file on stdin)."""
    args: list[str] = []
    for f in files:
        if f is not None:
            args += ["-f", str(f)]
    if values:
        args += ["-f", "-"]
    return args


def template_text(
    files: Sequence[Path | None] = (),
    values: Mapping[str, Any] | None = None,
    *,
    release: str = "payflow",
    namespace: str = "demo",
    extra: Sequence[str] = (),
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    return helm(
        "template",
        release,
        str(CHART),
        "--namespace",
        namespace,
        *values_args(files, values),
        *extra,
        input=yaml.safe_dump(dict(values)) if values else None,
        check=check,
    )


def render(
    files: Sequence[Path | None] = (),
    values: Mapping[str, Any] | None = None,
    *,
    release: str = "payflow",
    namespace: str = "demo",
    extra: Sequence[str] = (),
) -> list[Manifest]:
    """The chart's objects (hooks and tests included), as dicts."""
    text = template_text(files, values, release=release, namespace=namespace, extra=extra).stdout
    return [doc for doc in yaml.safe_load_all(text) if doc]


def find(manifests: Sequence[Manifest], kind: str, name: str | None = None) -> list[Manifest]:
    return [m for m in manifests if m["kind"] == kind and (name is None or m["metadata"]["name"] == name)]


def one(manifests: Sequence[Manifest], kind: str, name: str | None = None) -> Manifest:
    found = find(manifests, kind, name)
    assert len(found) == 1, (
        f"expected one {kind} {name or ''}, found {[m['metadata']['name'] for m in found]}"
    )
    return found[0]


def of_component(manifests: Sequence[Manifest], kind: str, component: str) -> Manifest:
    """The one ``kind`` object labelled ``app.kubernetes.io/component=component``."""
    found = [
        m for m in find(manifests, kind) if m["metadata"]["labels"].get(naming.COMPONENT_LABEL) == component
    ]
    assert len(found) == 1, (
        f"expected one {kind} of {component}, found {[m['metadata']['name'] for m in found]}"
    )
    return found[0]


def pod_specs(manifests: Sequence[Manifest]) -> Iterator[tuple[Manifest, dict[str, Any]]]:
    """Every pod spec: of workloads (their template) and of bare Pods (the test hook)."""
    for m in manifests:
        if m["kind"] in {"Deployment", "StatefulSet", "DaemonSet", "Job"}:
            yield m, m["spec"]["template"]["spec"]
        elif m["kind"] == "Pod":
            yield m, m["spec"]


def chart_defaults() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
    return loaded


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """What helm does with -f: maps merge key by key, anything else is replaced."""
    merged = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def hook(manifest: Manifest) -> str | None:
    annotations: dict[str, str] = manifest["metadata"].get("annotations") or {}
    return annotations.get("helm.sh/hook")


_VAR_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(text: str, env: Mapping[str, str]) -> str:
    """The kubelet's expansion of ``$(VAR)`` in env values, command and args: a defined
    variable is replaced, ``$$`` is a literal ``$``, an undefined reference stays as written."""

    def one_ref(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))

    return _VAR_REF.sub(one_ref, text)


def container_env(container: Mapping[str, Any], manifests: Sequence[Manifest]) -> dict[str, str]:
    """A container's ``env`` as the kubelet builds it, with Secret references read from the
    rendered Secrets (each entry may refer to the ones before it)."""
    env: dict[str, str] = {}
    for item in container.get("env") or []:
        if "value" in item:
            env[item["name"]] = expand(item["value"], env)
        elif ref := (item.get("valueFrom") or {}).get("secretKeyRef"):
            data = one(manifests, "Secret", ref["name"])["data"]
            env[item["name"]] = base64.b64decode(data[ref["key"]]).decode()
    return env
