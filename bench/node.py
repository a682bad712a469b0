"""The figures of the local node (issue 11), on `make demo`'s own stack.

    .venv/bin/python -m bench.node [--warm-runs 3] [--live 30] [--rollouts 6] [--ooms 3]
                                   [--via api|kubectl] [--only warm,memory,live,rollout,oom]
                                   [--cold images,go,venv,checkov]

Each figure, and how it is measured:

* **warm `make demo`**: ``payflow-stack up --demo`` (what ``make demo`` runs once ``make
  tools`` finds everything cached) in a throwaway state directory, timed from the command's
  start until it returns (every pod Ready, the app forwarded); beside it the supervisor's own
  step times. Stale images are built first (``payflow-stack images``), so the run is warm.
  Every run but the last is taken down again; the last one serves the figures below.
* **whole lab idle, memory**: after ``--settle`` seconds with no incident (the chart's default
  load running, as ``make demo`` leaves it), the sum of VmRSS (and PSS) of every process of the
  node: all of the stack's ``payflow-node-<guard>`` memory cgroup (control plane, kubelet,
  containerd, shims, the portal, the provisioner, every container), plus the supervisor and the
  node's guard outside it; grouped by pod and by process.
* **live incident**: from the create request of an incident (the Kubernetes Python client,
  ``--via api``, or ``kubectl apply``) until *both* app pods' ``GET /api/config`` show its latency
  fault with its own value and name. Each pod is read directly at its pod IP from a thread inside
  the node's network namespace (``NetnsRunner``), every 5 ms; then the delete until both show it
  cleared. The first incident is a warm-up, not counted.
* **rollout incident**: a ``delivery: rollout`` incident, from its create request until every pod
  of the new ReplicaSet is Ready (as many as the Deployment's replicas); then from the delete
  request until the original ReplicaSet's pods are all Ready again. Pods are listed every 0.2 s.
* **caching incident**: ``kubectl apply -f examples/incidents/caching-incident.yaml`` under the
  chart's default load until the first app container shows ``OOMKilled`` (its state or
  ``lastState``); then ``kubectl delete -f`` until the original ReplicaSet is Ready.
* **cold** (only with ``--cold``, about 30 minutes and both cores): every part a fresh machine
  builds, each in a throwaway cache: ``images`` (``PAYFLOW_CACHE=<tmp> payflow-stack images``),
  ``go`` (``tools/build-tools.sh`` with empty Go build and module caches), ``venv`` (the
  project's dependencies into a new venv, no pip cache), ``checkov`` (its venv). The Debian
  packages are not reinstalled (the machine's are in use): their time is not measured.

Only one node should run on this 2-core machine: the benchmark first waits (up to
``--max-wait`` seconds) for any other node to go, then samples the load average throughout and
prints it with the figures. Results also go to ``bench/results/node-<time>.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from bench.demo_stack import NAMESPACE, RELEASE, Demo, demo_stack, other_nodes, wait_for_quiet_machine
from payflow import naming
from payflow.devstack import tools
from payflow.devstack.node import NetnsRunner

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
CACHING_INCIDENT = REPO / "examples" / "incidents" / "caching-incident.yaml"
APP_PORT = 8080
POLL_S = 0.005  # /api/config of each pod (a read takes 1-3 ms more)
PODS_POLL_S = 0.2  # the pod list (rollouts, OOM)
DEMO_FIGURES = ("warm", "memory", "live", "rollout", "oom")
COLD_PARTS = ("images", "go", "venv", "checkov")
GOALS = {
    "warm_demo_s": 60.0,
    "cold_demo_s": 25 * 60.0,
    "live_p95_ms": 150.0,
    "rollout_apply_p95_s": 15.0,
    "rollout_delete_p95_s": 15.0,
    "oom_first_s": 90.0,
}


# --- figures ----------------------------------------------------------------------------


def pct(xs: list[float], q: float) -> float:
    """The nearest-rank percentile ``q`` (0..100) of ``xs``."""
    s = sorted(xs)
    return s[max(0, min(len(s), math.ceil(q / 100 * len(s))) - 1)]


def summary(xs: list[float]) -> dict[str, float | int]:
    return {"n": len(xs), "p50": pct(xs, 50), "p95": pct(xs, 95), "max": max(xs), "min": min(xs)}


class LoadMonitor:
    """The 1-minute load average every 5 s, in a background thread."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._t0 = time.monotonic()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.monotonic() - self._t0, os.getloadavg()[0]))
            self._stop.wait(5)

    def __enter__(self) -> LoadMonitor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def mark(self) -> float:
        return time.monotonic() - self._t0

    def between(self, start: float, end: float) -> dict[str, float]:
        xs = [load for t, load in self.samples if start <= t <= end] or [os.getloadavg()[0]]
        return {"mean": round(sum(xs) / len(xs), 2), "max": round(max(xs), 2)}


def verdict(value: float, goal: float) -> str:
    return "met" if value <= goal else "NOT met"


# --- the cluster, as the benchmark reads it ------------------------------------------------


class Cluster:
    """The demo through the Kubernetes Python client (its kubeconfig: the host's loopback forward)."""

    def __init__(self, demo: Demo) -> None:
        self.demo = demo
        api_client = k8s_config.new_client_from_config(config_file=str(demo.kubeconfig))
        self.core = k8s.CoreV1Api(api_client)
        self.apps = k8s.AppsV1Api(api_client)
        self.custom = k8s.CustomObjectsApi(api_client)

    def _json(self, resp: Any) -> Any:
        return json.loads(resp.data)

    def app_pods(self) -> list[dict[str, Any]]:
        resp = self.core.list_namespaced_pod(
            NAMESPACE, label_selector=naming.app_selector(RELEASE), _preload_content=False
        )
        return list(self._json(resp)["items"])

    def all_pods(self) -> list[dict[str, Any]]:
        return list(self._json(self.core.list_pod_for_all_namespaces(_preload_content=False))["items"])

    def replicas(self) -> int:
        return int(self.apps.read_namespaced_deployment(RELEASE, NAMESPACE).spec.replicas)

    def create_incident(self, name: str, faults: dict[str, Any], delivery: str) -> None:
        body = {
            "apiVersion": f"{naming.GROUP}/{naming.VERSION}",
            "kind": naming.KIND,
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"target": RELEASE, "delivery": delivery, "faults": faults},
        }
        self.custom.create_namespaced_custom_object(
            naming.GROUP, naming.VERSION, NAMESPACE, naming.PLURAL, body
        )

    def delete_incident(self, name: str) -> None:
        self.custom.delete_namespaced_custom_object(
            naming.GROUP, naming.VERSION, NAMESPACE, naming.PLURAL, name
        )


def is_ready(pod: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions") or [])


def template_hash(pod: dict[str, Any]) -> str:
    return str(pod["metadata"]["labels"].get("pod-template-hash", ""))


def oom_killed(pod: dict[str, Any]) -> bool:
    for cs in pod["status"].get("containerStatuses") or []:
        for st in (cs.get("state") or {}, cs.get("lastState") or {}):
            if (st.get("terminated") or {}).get("reason") == "OOMKilled":
                return True
    return False


def restarts(pod: dict[str, Any]) -> int:
    return sum(cs.get("restartCount", 0) for cs in pod["status"].get("containerStatuses") or [])


def poll(probe: Callable[[], Any], timeout: float, interval: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        if (found := probe()) is not None and found is not False:
            return found
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:.0f} s")
        time.sleep(interval)


def wait_steady(c: Cluster, timeout: float = 300.0) -> tuple[str, list[dict[str, Any]]]:
    """Every app replica Ready, of one ReplicaSet, none terminating: its template hash and pods."""

    def probe() -> tuple[str, list[dict[str, Any]]] | None:
        pods = c.app_pods()
        hashes = {template_hash(p) for p in pods}
        steady = (
            len(pods) == c.replicas()
            and len(hashes) == 1
            and all(is_ready(p) and not p["metadata"].get("deletionTimestamp") for p in pods)
        )
        return (hashes.pop(), pods) if steady else None

    result: tuple[str, list[dict[str, Any]]] = poll(probe, timeout, 1.0, "every app replica Ready")
    return result


# --- warm make demo ----------------------------------------------------------------------


def build_stale_images() -> str:
    """``payflow-stack images``: what it built (nothing when the cache is warm)."""
    proc = subprocess.run(
        [sys.executable, "-P", "-m", "payflow.devstack.cli", "images"],
        capture_output=True,
        text=True,
        timeout=3600,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"payflow-stack images failed:\n{proc.stdout}\n{proc.stderr}")
    return " ".join(m.group(1) for m in re.finditer(r"^(\w+)\s+\w+\s+built\s", proc.stdout, re.M))


def step_seconds(demo: Demo, prefix: str) -> float | None:
    return next((float(s["seconds"]) for s in demo.status["steps"] if s["step"].startswith(prefix)), None)


def warm_run(demo: Demo, built: str) -> dict[str, Any]:
    steps = [(float(s["seconds"]), str(s["step"])) for s in demo.status["steps"]]
    return {
        "up_seconds": round(demo.up_seconds, 1),
        "pods_ready_step_s": step_seconds(demo, "every pod Ready"),
        "images_built_before": built or None,
        "steps": steps,
    }


# --- memory --------------------------------------------------------------------------------

KINDS = {
    **dict.fromkeys(("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"), "control plane"),
    **dict.fromkeys(("kubelet", "kube-proxy", "containerd", "containerd-shim-runc-v2", "coredns"), "node"),
}  # the rest outside pods: the portal, the provisioner, the supervisor, the guard
_POD_RE = re.compile(r"pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})")
_CID_RE = re.compile(r"^[0-9a-f]{64}$")


def _kib(status: str, key: str) -> int:
    m = re.search(rf"^{key}:\s+(\d+) kB", status, re.M)
    return int(m.group(1)) if m else 0


def _proc_label(pid: int) -> str:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    args = [a.decode(errors="replace") for a in argv if a]
    if not args:
        return "?"
    if "-m" in args[:-1]:  # python -m payflow.devstack.portal: its module
        return args[args.index("-m") + 1].rsplit(".", 1)[-1]
    return Path(args[0]).name


def node_memory(demo: Demo, c: Cluster) -> dict[str, Any]:
    """VmRSS and PSS of every process of the node, grouped by pod (containers) or process name."""
    guard = demo.guard
    mem_cgroup = next((Path(d) for d in guard.cgroups if Path(d).parent.name == "memory"), None)
    if mem_cgroup is None:
        raise RuntimeError(f"no memory cgroup among the node's: {guard.cgroups}")
    where: dict[int, Path] = {}
    for procs in mem_cgroup.rglob("cgroup.procs"):
        for p in procs.read_text().split():
            where[int(p)] = procs.parent.relative_to(mem_cgroup)
    host_side = {int(demo.status["supervisor"]): "payflow-stack supervisor", guard.pid: "node guard"}
    pods = {
        p["metadata"]["uid"]: p
        for p in c.all_pods()
        if p["status"].get("phase") not in ("Succeeded", "Failed")
    }
    containers = {
        cs["containerID"].split("://", 1)[-1]: cs["name"]
        for p in pods.values()
        for cs in p["status"].get("containerStatuses") or []
        if cs.get("containerID")
    }
    groups: dict[str, dict[str, Any]] = {}
    total_rss = total_pss = 0
    for pid in sorted({*where, *host_side}):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue  # gone meanwhile
        rss = _kib(status, "VmRSS")
        try:
            pss = _kib(Path(f"/proc/{pid}/smaps_rollup").read_text(), "Pss")
        except OSError:
            pss = 0
        label, kind = host_side.get(pid, ""), "stack helpers"
        if not label:
            parts = where[pid].parts
            pod_m = next((m for part in parts if (m := _POD_RE.fullmatch(part))), None)
            if pod_m:
                uid = pod_m.group(1).replace("_", "-")
                pod = pods.get(uid)
                cid = next((x for x in parts if _CID_RE.match(x)), "")
                name = containers.get(cid, "pause (sandbox)")
                if pod is None:
                    label = f"pod {uid[:8]} (gone)"
                else:
                    label = f"pod {pod['metadata']['namespace']}/{pod['metadata']['name']}"
                kind = "pod containers" if name != "pause (sandbox)" else "pod sandboxes (pause)"
                if name == "pause (sandbox)":
                    label = "pause (every pod's sandbox)"
            else:
                label = _proc_label(pid)
                kind = KINDS.get(label, "stack helpers")
        g = groups.setdefault(label, {"kind": kind, "processes": 0, "rss_kib": 0, "pss_kib": 0})
        g["processes"] += 1
        g["rss_kib"] += rss
        g["pss_kib"] += pss
        total_rss += rss
        total_pss += pss
    by_kind: dict[str, int] = {}
    for g in groups.values():
        by_kind[g["kind"]] = by_kind.get(g["kind"], 0) + g["rss_kib"]
    stat = {}
    for line in (mem_cgroup / "memory.stat").read_text().splitlines():
        key, _, value = line.partition(" ")
        if key in ("total_rss", "total_cache", "total_shmem"):
            stat[key] = int(value)
    return {
        "rss_total_kib": total_rss,
        "pss_total_kib": total_pss,
        "processes": sum(g["processes"] for g in groups.values()),
        "groups": dict(sorted(groups.items(), key=lambda kv: -int(kv[1]["rss_kib"]))),
        "rss_by_kind_kib": dict(sorted(by_kind.items(), key=lambda kv: -kv[1])),
        "cgroup_usage_bytes": int((mem_cgroup / "memory.usage_in_bytes").read_text()),
        "cgroup_stat": stat,
    }


# --- live incidents ----------------------------------------------------------------------


class PodReader:
    """Reads one pod's /api/config at its pod IP, from a thread inside the node's network namespace."""

    def __init__(self, demo: Demo, name: str, ip: str) -> None:
        self.name = name
        self.runner: NetnsRunner = demo.netns()
        self.client: httpx.Client = self.runner.call(
            lambda: httpx.Client(base_url=f"http://{ip}:{APP_PORT}", timeout=2.0)
        )

    def latency(self) -> dict[str, Any] | None:
        try:
            return dict(self.client.get("/api/config").json()["faults"]["latency"])
        except (httpx.HTTPError, ValueError, KeyError):
            return None

    def wait(self, predicate: Callable[[dict[str, Any]], bool], timeout: float) -> float:
        """Runs in the namespace's thread: perf_counter() when a read first satisfies ``predicate``."""

        def loop() -> float:
            deadline = time.perf_counter() + timeout
            while True:
                fault = self.latency()
                now = time.perf_counter()
                if fault is not None and predicate(fault):
                    return now
                if now > deadline:
                    raise TimeoutError(
                        f"{self.name}: the latency fault did not change within {timeout:.0f} s"
                    )
                time.sleep(POLL_S)

        return self.runner.call(loop, timeout=timeout + 5)

    def close(self) -> None:
        self.runner.call(self.client.close)
        self.runner.close()


def _has(fault: dict[str, Any], name: str, delay: int) -> bool:
    return bool(
        fault["active"]
        and fault["params"].get("delayMs") == delay
        and any(i.get("incident") == name for i in fault.get("incidents") or [])
    )


def _kubectl_incident(name: str, delay: int) -> str:
    return (
        f"apiVersion: {naming.GROUP}/{naming.VERSION}\nkind: {naming.KIND}\n"
        f"metadata: {{name: {name}, namespace: {NAMESPACE}}}\n"
        f"spec: {{target: {RELEASE}, delivery: live, faults: {{latency: {{delayMs: {delay}}}}}}}\n"
    )


def live_sample(
    demo: Demo, c: Cluster, readers: list[PodReader], pool: ThreadPoolExecutor, i: int, via: str
) -> dict[str, float]:
    """Seconds from the create request to in force in every pod, from the delete request to
    cleared in every pod, and each request's round trip."""
    name, delay = f"bench-live-{i}", 100 + i  # its own value: a stale read can never pass
    on = [pool.submit(r.wait, lambda f: _has(f, name, delay), 60.0) for r in readers]
    t0 = time.perf_counter()
    if via == "kubectl":
        demo.kubectl("apply", "-f", "-", input=_kubectl_incident(name, delay))
    else:
        c.create_incident(name, {"latency": {"delayMs": delay}}, "live")
    t_accepted = time.perf_counter()
    seen = [f.result() for f in on]
    off = [pool.submit(r.wait, lambda f: not _has(f, name, delay), 60.0) for r in readers]
    t1 = time.perf_counter()
    if via == "kubectl":
        demo.kubectl("delete", "pfi", name, "-n", NAMESPACE, "--wait=false")
    else:
        c.delete_incident(name)
    t_deleted = time.perf_counter()
    gone = [f.result() for f in off]
    return {
        "apply_s": max(seen) - t0,
        "first_pod_s": min(seen) - t0,
        "create_rtt_s": t_accepted - t0,
        "delete_s": max(gone) - t1,
        "delete_rtt_s": t_deleted - t1,
    }


@contextmanager
def pod_readers(demo: Demo, pods: list[dict[str, Any]]) -> Iterator[list[PodReader]]:
    readers = [PodReader(demo, p["metadata"]["name"], p["status"]["podIP"]) for p in pods]
    try:
        yield readers
    finally:
        for r in readers:
            r.close()


def run_live(demo: Demo, c: Cluster, n: int, via: str) -> dict[str, Any]:
    _, pods = wait_steady(c)
    with pod_readers(demo, pods) as readers, ThreadPoolExecutor(len(readers)) as pool:
        live_sample(demo, c, readers, pool, 10_000, via)  # warm-up: connections, first reconcile
        samples = [live_sample(demo, c, readers, pool, i, via) for i in range(n)]
    return {
        "via": via,
        "pods": [p["metadata"]["name"] for p in pods],
        "samples": samples,
        **{k: summary([s[k] * 1000 for s in samples]) for k in samples[0]},
    }


# --- rollout incidents ---------------------------------------------------------------------


def rollout_sample(demo: Demo, c: Cluster, i: int) -> dict[str, float]:
    original, _ = wait_steady(c)
    replicas = c.replicas()
    name = f"bench-rollout-{i}"
    marks: dict[str, float] = {}

    def new_ready() -> bool:
        pods = [p for p in c.app_pods() if not p["metadata"].get("deletionTimestamp")]
        new = [p for p in pods if template_hash(p) != original]
        if "new_ready_s" not in marks and len(new) >= replicas and all(is_ready(p) for p in new):
            marks["new_ready_s"] = time.perf_counter() - t0
        if "new_ready_s" in marks and len(new) == len(pods):
            marks["complete_s"] = time.perf_counter() - t0  # no pod of the old ReplicaSet left
            return True
        return False

    t0 = time.perf_counter()
    c.create_incident(name, {"latency": {"delayMs": 20 + i}}, "rollout")
    poll(new_ready, 300, PODS_POLL_S, f"incident {name}: the new ReplicaSet Ready")

    def original_ready() -> bool:
        pods = [p for p in c.app_pods() if not p["metadata"].get("deletionTimestamp")]
        back = [p for p in pods if template_hash(p) == original]
        if "delete_ready_s" not in marks and len(back) >= replicas and all(is_ready(p) for p in back):
            marks["delete_ready_s"] = time.perf_counter() - t1
        if "delete_ready_s" in marks and len(back) == len(pods):
            marks["delete_complete_s"] = time.perf_counter() - t1
            return True
        return False

    t1 = time.perf_counter()
    c.delete_incident(name)
    poll(original_ready, 300, PODS_POLL_S, f"incident {name} deleted: the original ReplicaSet Ready")
    return marks


def run_rollouts(demo: Demo, c: Cluster, n: int) -> dict[str, Any]:
    samples = [rollout_sample(demo, c, i) for i in range(n)]
    return {"samples": samples, **{k: summary([s[k] for s in samples]) for k in samples[0]}}


# --- the caching incident ------------------------------------------------------------------


def oom_sample(demo: Demo, c: Cluster) -> dict[str, Any]:
    original, _ = wait_steady(c)
    replicas = c.replicas()
    t0 = time.perf_counter()
    demo.kubectl("apply", "-f", str(CACHING_INCIDENT))

    def first_oom() -> dict[str, Any] | None:
        return next((p for p in c.app_pods() if oom_killed(p)), None)

    pod = poll(first_oom, 600, PODS_POLL_S, "an app pod OOMKilled")
    oom_s = time.perf_counter() - t0
    new_rs = template_hash(pod) != original  # the bad deploy's pods, not the last known good ones
    t1 = time.perf_counter()
    demo.kubectl("delete", "-f", str(CACHING_INCIDENT))

    def rolled_back() -> bool:
        pods = [p for p in c.app_pods() if not p["metadata"].get("deletionTimestamp")]
        return len(pods) == replicas and all(
            template_hash(p) == original and is_ready(p) and restarts(p) == 0 for p in pods
        )

    poll(rolled_back, 600, PODS_POLL_S, "the rollback: the original ReplicaSet Ready")
    return {
        "oom_s": oom_s,
        "pod": pod["metadata"]["name"],
        "pod_of_new_replicaset": new_rs,
        "rollback_s": time.perf_counter() - t1,
    }


def run_ooms(demo: Demo, c: Cluster, n: int) -> dict[str, Any]:
    samples = [oom_sample(demo, c) for _ in range(n)]
    return {
        "samples": samples,
        "oom_s": summary([s["oom_s"] for s in samples]),
        "rollback_s": summary([s["rollback_s"] for s in samples]),
    }


# --- cold builds -------------------------------------------------------------------------


def _timed_lines(argv: list[str], env: dict[str, str], log: Path, timeout: float) -> tuple[float, list[Any]]:
    """Run ``argv``, each output line stamped with its seconds since the start; (total, lines)."""
    t0 = time.monotonic()
    lines: list[tuple[float, str]] = []
    with log.open("w") as out:
        proc = subprocess.Popen(
            argv, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            t = time.monotonic() - t0
            out.write(f"[{t:7.1f}s] {line}")
            out.flush()
            if line.startswith("[tools]") or re.match(r"^\w+\s+[0-9a-f]{16}\s+(built|cached)", line):
                lines.append((round(t, 1), line.rstrip()))
        code = proc.wait(timeout=timeout)
    if code != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({code}); see {log}")
    return time.monotonic() - t0, lines


def _no_mounts_below(root: Path) -> bool:
    return not any(f" {root}" in line for line in Path("/proc/self/mounts").read_text().splitlines())


def cold_part(part: str, tmp: Path, logs: Path) -> dict[str, Any]:
    env = {**os.environ, "PAYFLOW_CACHE": str(tmp / "cache"), "PIP_NO_CACHE_DIR": "1"}
    log = logs / f"cold-{part}.log"
    if part == "images":
        argv = [sys.executable, "-P", "-m", "payflow.devstack.cli", "images"]
    elif part == "go":
        env |= {
            "GOCACHE": str(tmp / "gocache"),
            "GOMODCACHE": str(tmp / "gomod"),
            "GOPATH": str(tmp / "gopath"),
        }
        argv = ["bash", str(REPO / "tools" / "build-tools.sh")]
    elif part == "checkov":
        argv = ["bash", str(REPO / "tools" / "install-checkov.sh")]
    elif part == "venv":  # what `make venv` downloads and installs: every dependency, dev extras too
        project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
        deps = [*project["dependencies"], *project["optional-dependencies"]["dev"]]
        venv = tmp / "venv"
        script = (
            f"{sys.executable} -I -m venv {venv} && {venv}/bin/pip install -q --upgrade pip && "
            f"{venv}/bin/pip install -q " + " ".join(f"'{d}'" for d in deps)
        )
        argv = ["bash", "-c", script]
    else:
        raise ValueError(f"unknown cold part {part!r}: images, go, venv, checkov")
    seconds, lines = _timed_lines(argv, env, log, timeout=3600)
    return {"seconds": round(seconds, 1), "log": str(log), "lines": lines}


def run_cold(parts: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    logs = RESULTS / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    for part in parts:
        tmp = Path(tempfile.mkdtemp(prefix=f"pfb-cold-{part}-", dir="/var/tmp"))  # on disk, not tmpfs
        try:
            print(f"cold {part}: building in {tmp} (log {logs}/cold-{part}.log)", flush=True)
            out[part] = cold_part(part, tmp, logs)
            print(f"cold {part}: {out[part]['seconds']:.0f} s", flush=True)
        finally:
            subprocess.run(
                ["chmod", "-R", "u+w", str(tmp)], check=False, capture_output=True
            )  # Go's read-only module cache
            if _no_mounts_below(tmp):
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                print(f"cold {part}: mounts remain below {tmp}; left in place", flush=True)
    return out


# --- the run -----------------------------------------------------------------------------


def mib(kib: float) -> float:
    return kib / 1024


def print_memory(mem: dict[str, Any], top: int = 14) -> None:
    print(
        f"  {mem['processes']} processes: RSS {mib(mem['rss_total_kib']):.0f} MiB "
        f"(PSS {mib(mem['pss_total_kib']):.0f} MiB; the memory cgroup's usage "
        f"{mem['cgroup_usage_bytes'] / 2**20:.0f} MiB, of it rss "
        f"{mem['cgroup_stat'].get('total_rss', 0) / 2**20:.0f} MiB)"
    )
    print(f"  {'part':<44}{'procs':>6}{'RSS MiB':>9}{'PSS MiB':>9}")
    for label, g in list(mem["groups"].items())[:top]:
        print(f"  {label:<44}{g['processes']:>6}{mib(g['rss_kib']):>9.0f}{mib(g['pss_kib']):>9.0f}")
    rest = list(mem["groups"].values())[top:]
    if rest:
        rss, pss = sum(g["rss_kib"] for g in rest), sum(g["pss_kib"] for g in rest)
        print(f"  {'the rest':<44}{sum(g['processes'] for g in rest):>6}{mib(rss):>9.0f}{mib(pss):>9.0f}")
    print("  RSS by kind: " + ", ".join(f"{k} {mib(v):.0f} MiB" for k, v in mem["rss_by_kind_kib"].items()))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--warm-runs", type=int, default=3, help="warm `make demo` starts (the last one stays up)"
    )
    parser.add_argument("--live", type=int, default=30, help="live incidents (N)")
    parser.add_argument(
        "--via", choices=("api", "kubectl"), default="api", help="how live incidents are created"
    )
    parser.add_argument("--rollouts", type=int, default=6, help="rollout incidents (N)")
    parser.add_argument("--ooms", type=int, default=3, help="caching incidents (N)")
    parser.add_argument("--settle", type=float, default=30.0, help="seconds idle before the memory figure")
    parser.add_argument("--only", default=",".join(DEMO_FIGURES), help="which demo figures (none: '')")
    parser.add_argument(
        "--cold", default="", help="also the cold builds: images,go,venv,checkov (about 30 min)"
    )
    parser.add_argument(
        "--max-wait", type=float, default=1200.0, help="seconds to wait for another node to go"
    )
    args = parser.parse_args()
    only = {x for x in args.only.split(",") if x}
    if unknown := only - set(DEMO_FIGURES):
        parser.error(f"--only: unknown {sorted(unknown)}; known: {','.join(DEMO_FIGURES)}")
    if only and min(args.warm_runs, args.live, args.rollouts, args.ooms) < 1:
        parser.error(
            "--warm-runs, --live, --rollouts and --ooms are at least 1 (leave a figure out with --only)"
        )
    cold = [x for x in args.cold.split(",") if x]
    if unknown_cold := set(cold) - set(COLD_PARTS):
        parser.error(f"--cold: unknown {sorted(unknown_cold)}; known: {','.join(COLD_PARTS)}")
    tools.find("kubectl")  # fail before anything starts when the tools are missing

    started = time.strftime("%Y-%m-%dT%H:%M:%S")
    figures: dict[str, Any] = {"started": started, "machine": {"cpus": os.cpu_count()}, "args": vars(args)}
    with LoadMonitor() as load:
        if only:
            figures["waited_for_other_nodes_s"] = round(wait_for_quiet_machine(args.max_wait), 1)
            runs: list[dict[str, Any]] = []
            for run in range(args.warm_runs):
                built = build_stale_images()
                if built:
                    print(f"images rebuilt before run {run + 1} (their inputs changed): {built}", flush=True)
                start = load.mark()
                with demo_stack() as demo:
                    r = warm_run(demo, built)
                    r["other_nodes"] = [p for p in other_nodes() if p != demo.guard.pid]
                    r["load"] = load.between(start, load.mark())
                    runs.append(r)
                    print(
                        f"warm make demo, run {run + 1}: {r['up_seconds']:.1f} s "
                        f"(every pod Ready at {r['pods_ready_step_s']} s of the supervisor's steps)",
                        flush=True,
                    )
                    if run == args.warm_runs - 1:
                        figures["warm_demo"] = {
                            "runs": runs,
                            "up_seconds": summary([x["up_seconds"] for x in runs]),
                        }
                        print(demo.up_output, flush=True)
                        bench_on(demo, args, only, figures, load)
        if cold:
            start = load.mark()
            figures["cold"] = run_cold(cold)
            figures["cold"]["load"] = load.between(start, load.mark())
    figures["loadavg"] = {"samples": load.samples, "at_end": os.getloadavg()}
    print_report(figures)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"node-{started.replace(':', '')}.json"
    out.write_text(json.dumps(figures, indent=2, default=str))
    print(f"\nresults: {out}")
    return 0


def bench_on(
    demo: Demo, args: argparse.Namespace, only: set[str], figures: dict[str, Any], load: LoadMonitor
) -> None:
    c = Cluster(demo)
    if "memory" in only:
        wait_steady(c)
        time.sleep(args.settle)  # idle on purpose: the lab as `make demo` leaves it
        figures["memory"] = node_memory(demo, c)
        figures["memory"]["load"] = load.between(load.mark() - args.settle, load.mark())
        print("whole lab idle, memory:", flush=True)
        print_memory(figures["memory"])
    if "live" in only:
        start = load.mark()
        figures["live"] = run_live(demo, c, args.live, args.via)
        figures["live"]["load"] = load.between(start, load.mark())
        live = figures["live"]
        print(
            f"live: create -> in force in every pod p50 {live['apply_s']['p50']:.0f} ms, "
            f"p95 {live['apply_s']['p95']:.0f} ms (N={args.live}, via {args.via})",
            flush=True,
        )
    if "rollout" in only:
        start = load.mark()
        figures["rollout"] = run_rollouts(demo, c, args.rollouts)
        figures["rollout"]["load"] = load.between(start, load.mark())
        r = figures["rollout"]
        print(
            f"rollout: apply -> new pods Ready p95 {r['new_ready_s']['p95']:.1f} s, "
            f"delete -> original Ready p95 {r['delete_ready_s']['p95']:.1f} s (N={args.rollouts})",
            flush=True,
        )
    if "oom" in only:
        start = load.mark()
        figures["oom"] = run_ooms(demo, c, args.ooms)
        figures["oom"]["load"] = load.between(start, load.mark())
        o = figures["oom"]
        print(
            f"caching incident: apply -> first OOMKilled p50 {o['oom_s']['p50']:.0f} s, "
            f"max {o['oom_s']['max']:.0f} s (N={args.ooms})",
            flush=True,
        )


def lf(d: dict[str, Any]) -> str:
    return f"{d['load']['mean']:.2f} (max {d['load']['max']:.2f})"


def print_report(f: dict[str, Any]) -> None:
    print("\nbench.node: the local node's figures (issue 11)")
    waited = f.get("waited_for_other_nodes_s", 0.0)
    print(f"machine: {f['machine']['cpus']} cores; waited {waited:.0f} s for other nodes to go")
    rows: list[tuple[str, str, str, str]] = []  # what, figure, goal, load
    if w := f.get("warm_demo"):
        ups = [r["up_seconds"] for r in w["runs"]]
        worst = max(ups)
        loads = "; ".join(f"{r['load']['mean']:.2f}" for r in w["runs"])
        rows.append(
            (
                "warm make demo, start to every pod Ready",
                ", ".join(f"{u:.1f}" for u in ups) + f" s ({len(ups)} runs)",
                f"<= 60 s: {verdict(worst, GOALS['warm_demo_s'])}",
                loads,
            )
        )
    if m := f.get("memory"):
        top = ", ".join(f"{k} {g['rss_kib'] / 1024:.0f}" for k, g in list(m["groups"].items())[:3])
        rows.append(
            (
                "whole lab idle, memory (sum of RSS)",
                f"{m['rss_total_kib'] / 1024:.0f} MiB RSS, {m['pss_total_kib'] / 1024:.0f} MiB PSS, "
                f"{m['processes']} procs; largest (MiB): {top}",
                "printed",
                lf(m),
            )
        )
    if lv := f.get("live"):
        a, d = lv["apply_s"], lv["delete_s"]
        rows.append(
            (
                f"live incident: create -> in force in both app pods (N={a['n']}, {lv['via']})",
                f"p50 {a['p50']:.0f} ms, p95 {a['p95']:.0f} ms, max {a['max']:.0f} ms "
                f"(create round trip p50 {lv['create_rtt_s']['p50']:.0f} ms)",
                f"p95 <= 150 ms: {verdict(a['p95'], GOALS['live_p95_ms'])}",
                lf(lv),
            )
        )
        rows.append(
            (
                "live incident: delete -> cleared in both app pods",
                f"p50 {d['p50']:.0f} ms, p95 {d['p95']:.0f} ms, max {d['max']:.0f} ms",
                "",
                lf(lv),
            )
        )
    if r := f.get("rollout"):
        a, d = r["new_ready_s"], r["delete_ready_s"]
        rows.append(
            (
                f"rollout incident: apply -> every new pod Ready (N={a['n']})",
                f"p50 {a['p50']:.1f} s, p95 {a['p95']:.1f} s "
                f"(old pods gone: p95 {r['complete_s']['p95']:.1f} s)",
                f"p95 <= 15 s: {verdict(a['p95'], GOALS['rollout_apply_p95_s'])}",
                lf(r),
            )
        )
        rows.append(
            (
                "rollout incident: delete -> original ReplicaSet Ready",
                f"p50 {d['p50']:.1f} s, p95 {d['p95']:.1f} s "
                f"(others gone: p95 {r['delete_complete_s']['p95']:.1f} s)",
                f"p95 <= 15 s: {verdict(d['p95'], GOALS['rollout_delete_p95_s'])}",
                lf(r),
            )
        )
    if o := f.get("oom"):
        xs = [s["oom_s"] for s in o["samples"]]
        rows.append(
            (
                f"caching incident (default load): apply -> first OOMKilled (N={len(xs)})",
                ", ".join(f"{x:.0f}" for x in xs)
                + " s; delete -> original Ready "
                + ", ".join(f"{s['rollback_s']:.0f}" for s in o["samples"])
                + " s",
                f"<= 90 s: {verdict(max(xs), GOALS['oom_first_s'])}",
                lf(o),
            )
        )
    if cold := f.get("cold"):
        parts = {k: v for k, v in cold.items() if k != "load"}
        total = sum(v["seconds"] for v in parts.values())
        rows.append(
            (
                "cold builds (" + ", ".join(parts) + ")",
                ", ".join(f"{k} {v['seconds'] / 60:.1f} min" for k, v in parts.items())
                + f"; sum {total / 60:.1f} min",
                "",
                lf(cold),
            )
        )
    width = max(len(r[0]) for r in rows) if rows else 10
    print(f"{'figure':<{width}}  {'measured':<60}  {'goal':<22}  load avg (1 min)")
    for what, fig, goal, lo in rows:
        print(f"{what:<{width}}  {fig:<60}  {goal:<22}  {lo}")
    if m := f.get("memory"):
        print("\nwhole lab idle, memory:")
        print_memory(m)


if __name__ == "__main__":
    raise SystemExit(main())
