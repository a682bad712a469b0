"""The demo on the local node: the chart installed as a user would, with real pods.

Steps, each timed by the caller's ``step``: the images are built (or found in the cache) and
imported into the node's containerd, the namespace is created and opted in, ``helm upgrade
--install`` installs the chart (its CRD, the app, the operator, PostgreSQL, Redis and the load
generator), every pod is waited for until Ready, and the portal's ``app`` listener is pointed at
the app's Service: the dashboard and the API on the host's loopback.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from payflow import naming
from payflow.devstack import node, tools
from payflow.devstack.stack import LocalStack

NAMESPACE = "demo"
RELEASE = "payflow"
CHART = tools.REPO_ROOT / "helm" / "payflow"
READY_TIMEOUT = 300.0


@dataclass
class NodeDemoConfig:
    namespace: str = NAMESPACE
    release: str = RELEASE
    # Extra `helm --set` values (the load rate, say); none for the chart as users get it.
    set_values: Mapping[str, str] = field(default_factory=dict)


def run(argv: Sequence[str], env: Mapping[str, str], input: str | None = None, timeout: float = 300) -> str:
    proc = subprocess.run(
        list(argv), env=dict(env), capture_output=True, text=True, input=input, timeout=timeout
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:4])} ... failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def pod_problems(pods: Sequence[Mapping[str, Any]]) -> list[str]:
    """What keeps each pod from being Ready (a job's finished pods don't count)."""
    problems = []
    for p in pods:
        status = p.get("status") or {}
        if status.get("phase") == "Succeeded":
            continue
        ready = any(
            c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or []
        )
        if ready:
            continue
        why = status.get("phase", "Unknown")
        for cs in status.get("containerStatuses") or []:
            state = cs.get("state") or {}
            detail = (state.get("waiting") or state.get("terminated") or {}).get("reason")
            if detail:
                why = f"{why}, {cs['name']}: {detail}"
        problems.append(f"{p['metadata']['name']} ({why})")
    return problems


class NodeDemo:
    """Installs the chart on the local node and waits for it."""

    def __init__(self, stack: LocalStack, config: NodeDemoConfig | None = None) -> None:
        self.stack = stack
        self.config = config or NodeDemoConfig()
        path = ":".join(str(d) for d in tools.bin_dirs())
        self.env = {**os.environ, **stack.env(), "PATH": f"{path}:{os.environ.get('PATH', '')}"}
        self.kubectl = str(tools.find("kubectl").path)
        self.helm = str(tools.find("helm").path)
        self.app_url: str | None = None
        self.images: list[str] = []  # the tags offered to the node

    def k(self, *args: str, input: str | None = None) -> str:
        return run([self.kubectl, *args], self.env, input)

    def install(self, step: Callable[[str], None]) -> None:
        from payflow.devstack import images

        log = lambda line: print(line, flush=True)  # noqa: E731 (the supervisor's log)
        built = images.build_all(log=log)
        fresh = [b for b in built if not b.cached]
        step(f"images ready ({len(built)}, {len(fresh)} built, the rest cached by input hash)")
        offered = [b for b in built if b.name != "base"]  # the base is an input of builds only
        imported = images.import_images([b.archive for b in offered], self.stack.ctr_command, log=log)
        self.images = [t for b in offered for t in b.tags]
        step(f"images offered to the node's containerd ({len(imported)} imported): {', '.join(self.images)}")
        self.wait_node_ready()
        step(f"node {node.NODE_NAME} Ready")
        ns = self.config.namespace
        manifest = self.k("create", "namespace", ns, "--dry-run=client", "-o", "json")
        self.k("apply", "-f", "-", input=manifest)
        self.k("label", "namespace", ns, f"{naming.OPT_IN_LABEL}={naming.OPT_IN_VALUE}", "--overwrite")
        step(f"namespace {ns} opted in ({naming.OPT_IN_LABEL}={naming.OPT_IN_VALUE})")
        sets = [a for k, v in self.config.set_values.items() for a in ("--set", f"{k}={v}")]
        run([self.helm, "upgrade", "--install", self.config.release, str(CHART), "-n", ns, *sets], self.env)
        step(f"chart installed as release {self.config.release}")
        self.wait_pods_ready()
        step("every pod Ready: " + ", ".join(self.pod_names()))
        self.app_url = self.forward_app()
        step(f"the app's Service forwarded to {self.app_url}")

    def wait_node_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            out = json.loads(self.k("get", "nodes", "-o", "json"))
            for n in out["items"]:
                if any(
                    c["type"] == "Ready" and c["status"] == "True" for c in n["status"].get("conditions", [])
                ):
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"node not Ready after {timeout:.0f}s; see {self.stack.logs}/kubelet.log")
            time.sleep(0.5)

    def pods(self) -> list[dict[str, Any]]:
        return list(json.loads(self.k("get", "pods", "-n", self.config.namespace, "-o", "json"))["items"])

    def pod_names(self) -> list[str]:
        return sorted(p["metadata"]["name"] for p in self.pods() if p["status"].get("phase") != "Succeeded")

    def wait_pods_ready(self, timeout: float | None = None) -> None:
        timeout = READY_TIMEOUT if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while True:
            pods = self.pods()
            problems = pod_problems(pods)
            if pods and not problems:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"pods not Ready after {timeout:.0f}s: {'; '.join(problems) or 'no pods'}")
            time.sleep(1.0)

    def forward_app(self) -> str:
        svc = json.loads(
            self.k("get", "service", self.config.release, "-n", self.config.namespace, "-o", "json")
        )
        return self.stack.forward("app", svc["spec"]["clusterIP"], int(svc["spec"]["ports"][0]["port"]))


def kubelet_metrics(k: Callable[..., str]) -> str:
    """The kubelet's cAdvisor metrics, through the API server's node proxy."""
    return k("get", "--raw", f"/api/v1/nodes/{node.NODE_NAME}/proxy/metrics/cadvisor")
