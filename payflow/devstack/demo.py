"""The demo on the local stack: the chart installed in the local API server, and local
processes standing in for its pods.

The local API server has no nodes, so the chart's pods stay Pending; its objects (the CRD,
the faults ConfigMap, the app Deployment, the ServiceAccounts and their RBAC) are real. In
their place:

* the **operator** runs as a local process with its ServiceAccount's token (its RBAC is the
  chart's, not admin's);
* the **app** runs as a local process with the environment a pod of the Deployment would get
  (its ``env`` and ``envFrom`` of the faults ConfigMap, read again at each start), pointed at
  the local PostgreSQL and Redis, watching its ConfigMap with its own ServiceAccount's token.
  When it crashes (the OOM and panic faults) it is restarted with a back-off; when the
  Deployment's pod template changes (delivery ``rollout``) it is restarted, as a rollout
  would replace the pod;
* the **load generator** sends open-loop traffic to the app.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from payflow import naming
from payflow.devstack import tools
from payflow.devstack.process import Process, free_port
from payflow.devstack.stack import LocalStack
from payflow.devstack.workloads import Workload

NAMESPACE = "demo"
RELEASE = "payflow"
CHART = tools.REPO_ROOT / "helm" / "payflow"
CRD_DIR = tools.REPO_ROOT / "crds"
LOAD_RATE = 10.0  # requests per second: enough for every fault to show on the charts
TOKEN_DURATION = "48h"  # noqa: S105 (a lifetime, not a secret)


@dataclass
class DemoConfig:
    namespace: str = NAMESPACE
    release: str = RELEASE
    load_rate: float = LOAD_RATE
    app_port: int = field(default_factory=free_port)
    operator_port: int = field(default_factory=free_port)
    loadgen_metrics_port: int = field(default_factory=free_port)


def _script(name: str) -> str:
    """A console script of this environment (never `python -m` from the repo root)."""
    return str(Path(sys.executable).parent / name)


def run(argv: list[str], env: Mapping[str, str], input: str | None = None) -> str:
    proc = subprocess.run(argv, env=dict(env), capture_output=True, text=True, input=input, timeout=180)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:4])} ... failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


class DemoTarget:
    """The chart's objects in the local API server, and reads of them."""

    def __init__(self, stack: LocalStack, config: DemoConfig) -> None:
        self.stack = stack
        self.config = config
        self.env = {**os.environ, **stack.env()}
        self.kubectl = str(tools.find("kubectl").path)
        self.helm = str(tools.find("helm").path)

    def k(self, *args: str, input: str | None = None) -> str:
        return run([self.kubectl, *args], self.env, input)

    def install(self, step: Callable[[str], None]) -> None:
        """The CRD, the opted-in namespace, the chart (pods stay Pending: no nodes)."""
        ns, release = self.config.namespace, self.config.release
        self.k("apply", "--server-side", "-f", str(CRD_DIR))
        self.k("wait", "--for=condition=Established", "--timeout=60s", f"crd/{naming.PLURAL}.{naming.GROUP}")
        step("CRD installed")
        manifest = self.k("create", "namespace", ns, "--dry-run=client", "-o", "json")
        self.k("apply", "-f", "-", input=manifest)
        self.k("label", "namespace", ns, f"{naming.OPT_IN_LABEL}={naming.OPT_IN_VALUE}", "--overwrite")
        step(f"namespace {ns} opted in ({naming.OPT_IN_LABEL}={naming.OPT_IN_VALUE})")
        run(
            [
                self.helm,
                "upgrade",
                "--install",
                release,
                str(CHART),
                "-n",
                ns,
                "--skip-crds",
                "--set",
                "app.replicas=1",
            ],
            self.env,
        )
        step(f"chart installed as release {release} (its pods stay Pending: the local processes stand in)")

    def token_kubeconfig(self, component: str, path: Path) -> Path:
        """A kubeconfig with the token of the chart's ServiceAccount for ``component``."""
        ns = self.config.namespace
        selector = f"{naming.INSTANCE_LABEL}={self.config.release},{naming.COMPONENT_LABEL}={component}"
        names = self.k("get", "serviceaccount", "-n", ns, "-l", selector, "-o", "name").split()
        if len(names) != 1:
            raise RuntimeError(f"expected one ServiceAccount for {component} in {ns}, found {names}")
        token = self.k("create", "token", names[0].split("/", 1)[1], "-n", ns, f"--duration={TOKEN_DURATION}")
        return self.stack.write_token_kubeconfig(path, token.strip(), ns)

    def deployment(self) -> dict[str, Any]:
        ns = self.config.namespace
        out = self.k(
            "get", "deployment", "-n", ns, "-l", naming.app_selector(self.config.release), "-o", "json"
        )
        items = json.loads(out)["items"]
        if len(items) != 1:
            raise RuntimeError(f"expected one app Deployment in {ns}, found {len(items)}")
        return dict(items[0])

    def configmap_data(self, name: str) -> dict[str, str]:
        out = self.k("get", "configmap", name, "-n", self.config.namespace, "-o", "json")
        return dict(json.loads(out).get("data") or {})


def template_hash(deployment: Mapping[str, Any]) -> str:
    """What identifies a pod template: a rollout happens exactly when this changes."""
    template = (deployment.get("spec") or {}).get("template") or {}
    return hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:12]


def pod_env(
    deployment: Mapping[str, Any], configmaps: Mapping[str, Mapping[str, str]], pod_name: str
) -> dict[str, str]:
    """The environment the kubelet would give the first container of ``deployment``'s pods:
    ``envFrom`` ConfigMaps first, then ``env`` (which wins). Values from Secrets are left out
    (the local stack supplies its own URLs)."""
    meta = deployment.get("metadata") or {}
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        ref = source.get("configMapRef")
        if ref:
            prefix = source.get("prefix", "")
            env.update({prefix + k: v for k, v in (configmaps.get(ref["name"]) or {}).items()})
    fields = {"metadata.namespace": meta.get("namespace", ""), "metadata.name": pod_name}
    for item in container.get("env") or []:
        if "value" in item:
            env[item["name"]] = str(item["value"])
        elif (ref := (item.get("valueFrom") or {}).get("fieldRef")) and ref.get("fieldPath") in fields:
            env[item["name"]] = fields[ref["fieldPath"]]
    return env


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 (our own loopback URL)
        return bool(resp.status == 200)


class Demo:
    """Installs the target and builds the three workloads."""

    def __init__(self, stack: LocalStack, config: DemoConfig | None = None) -> None:
        self.stack = stack
        self.config = config or DemoConfig()
        self.target = DemoTarget(stack, self.config)
        self.dir = stack.workdir / "demo"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.app_template: str | None = None

    @property
    def app_url(self) -> str:
        return f"http://127.0.0.1:{self.config.app_port}"

    def install(self, step: Callable[[str], None]) -> None:
        self.target.install(step)
        self.operator_kubeconfig = self.target.token_kubeconfig("operator", self.dir / "operator.kubeconfig")
        self.app_kubeconfig = self.target.token_kubeconfig("api", self.dir / "app.kubeconfig")
        step("ServiceAccount tokens issued for the operator and the app (their chart RBAC applies)")

    def _base_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("INJECT_", "PAYFLOW_"))}
        env.pop("KUBECONFIG", None)
        return env

    def operator(self) -> Workload:
        def build(restarts: int) -> Process:
            env = {
                **self._base_env(),
                "KUBECONFIG": str(self.operator_kubeconfig),
                "PAYFLOW_WATCH_NAMESPACES": self.config.namespace,
                "PAYFLOW_OPERATOR_PORT": str(self.config.operator_port),
            }
            return Process(
                "operator", [_script("payflow-operator")], self.stack.logs / "operator.log", env=env
            )

        return Workload(
            "operator", build, ready=lambda: _http_ok(f"http://127.0.0.1:{self.config.operator_port}/healthz")
        )

    def app(self) -> Workload:
        def build(restarts: int) -> Process:
            deployment = self.target.deployment()
            self.app_template = template_hash(deployment)
            cm = naming.faults_configmap_name(self.config.release)
            pod = f"{deployment['metadata']['name']}-local-{restarts}"
            env = {
                **self._base_env(),
                **pod_env(deployment, {cm: self.target.configmap_data(cm)}, pod),
                "DATABASE_URL": self.stack.database_url,
                "REDIS_URL": self.stack.redis_url,
                "KUBECONFIG": str(self.app_kubeconfig),
                "PAYFLOW_HOST": "127.0.0.1",
                "PAYFLOW_PORT": str(self.config.app_port),
                "PAYFLOW_RESTART_COUNT": str(restarts),
                "HOSTNAME": pod,  # what a pod's hostname is: the app reports it as its replica
            }
            return Process("app", [_script("payflow-app")], self.stack.logs / "app.log", env=env)

        return Workload("app", build, ready=lambda: _http_ok(f"{self.app_url}/health"))

    def loadgen(self) -> Workload:
        def build(restarts: int) -> Process:
            argv = [
                _script("payflow-loadgen"),
                "--target",
                self.app_url,
                "--rate",
                str(self.config.load_rate),
                "--duration",
                "0",
                "--metrics-port",
                str(self.config.loadgen_metrics_port),
            ]
            return Process("loadgen", argv, self.stack.logs / "loadgen.log", env=self._base_env())

        return Workload("loadgen", build)

    def rollout_pending(self) -> str | None:
        """A reason to replace the app "pod" when the Deployment's pod template changed."""
        if self.app_template is None:
            return None
        deployment = self.target.deployment()
        now = template_hash(deployment)
        if now == self.app_template:
            return None
        annotations = deployment["spec"]["template"].get("metadata", {}).get("annotations") or {}
        digest = annotations.get(naming.DIGEST_ANNOTATION, "baseline")
        return f"rollout: new pod template {now} (faults {digest})"


def timed(label: str, started: float) -> str:
    return f"[{time.monotonic() - started:5.1f}s] {label}"
