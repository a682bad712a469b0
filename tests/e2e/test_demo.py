"""`make demo` on the node: what it prints, what it runs, and the seed's ways in."""

from __future__ import annotations

import contextlib
import os
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

from payflow.devstack import hostcfg, tools
from payflow.devstack.process import pids_mentioning
from tests.e2e.conftest import NS, RELEASE, Cluster
from tests.support import wait_for


def test_the_demo_is_ready_with_real_pods_and_says_what_to_do_next(demo: Cluster) -> None:
    out = demo.up_output
    assert "PayFlow demo ready in" in out
    assert f"dashboard  {demo.app_url}/" in out
    assert "kubectl apply -f examples/incidents/latency.yaml" in out
    assert f"kubectl port-forward -n {NS} svc/{RELEASE} 8080:80" in out
    status = demo.status
    assert status["phase"] == "ready"
    parts = {name: c["state"] for name, c in status["components"].items()}
    assert parts == {name: "running" for name in parts}
    assert {"kubelet", "containerd", "kube-proxy", "coredns", "kube-scheduler"} <= set(parts)
    # Every pod of the chart runs, on the node, and is Ready.
    pods = demo.json("get", "pods")["items"]
    by_component: dict[str, int] = {}
    for pod in pods:
        component = pod["metadata"]["labels"].get("app.kubernetes.io/component", "?")
        assert pod["spec"]["nodeName"] == "payflow-node"
        assert pod["status"]["phase"] == "Running", (pod["metadata"]["name"], pod["status"])
        by_component[component] = by_component.get(component, 0) + 1
    assert by_component == {"api": 2, "operator": 1, "postgresql": 1, "redis": 1, "loadgen": 1}
    # The load generator's traffic reaches the app, and the host sees it on loopback.
    assert demo.app_url.startswith("http://127.0.0.1:")
    wait_for(
        lambda: demo.get("/api/transactions?limit=1")["items"], timeout=60, what="a payment from the load"
    )


def test_status_says_which_images_the_node_was_offered(demo: Cluster) -> None:
    status = subprocess.run(
        [str(tools.REPO_ROOT / ".venv" / "bin" / "payflow-stack"), "--state-dir", str(demo.state), "status"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert status.returncode == 0, status.stdout + status.stderr
    assert "air-gapped mirror" in status.stdout
    assert "docker.io/library/postgres:" in status.stdout
    assert "docker.io/library/redis:" in status.stdout
    assert "kubelet" in status.stdout
    assert "RESTARTS" in status.stdout


def active_faults(demo: Cluster) -> dict[str, Any]:
    return {name: f for name, f in demo.get("/api/config")["faults"].items() if f["active"]}


def test_a_live_incident_acts_without_a_restart(demo: Cluster) -> None:
    before = {
        p["metadata"]["name"]: p["status"]["containerStatuses"][0]["restartCount"] for p in demo.app_pods()
    }
    demo.sh("kubectl apply -f examples/incidents/latency.yaml")
    latency = wait_for(lambda: active_faults(demo).get("latency"), timeout=10, what="latency in /api/config")
    assert latency["source"] == "configmap"
    assert [i["incident"] for i in latency["incidents"]] == ["checkout-latency"]
    row = demo.sh("kubectl get pfi checkout-latency -n demo --no-headers").stdout.split()
    assert row[:5] == ["checkout-latency", "payflow", "latency", "live", "Active"]
    demo.sh("kubectl delete -f examples/incidents/latency.yaml")
    wait_for(lambda: "latency" not in active_faults(demo), timeout=10, what="latency cleared")
    after = {
        p["metadata"]["name"]: p["status"]["containerStatuses"][0]["restartCount"] for p in demo.app_pods()
    }
    assert after == before


def test_the_seeds_port_forward_serves_the_dashboard(demo: Cluster) -> None:
    forward = subprocess.Popen(
        ["bash", "-c", f"source {demo.env_file} && exec kubectl port-forward -n demo svc/payflow 8080:80"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:

        def page() -> str | None:
            if forward.poll() is not None:
                raise AssertionError(f"kubectl port-forward exited: {forward.communicate()[0]}")
            with urllib.request.urlopen("http://localhost:8080/", timeout=5) as resp:
                return str(resp.read().decode()) if resp.status == 200 else None

        html = wait_for(page, timeout=30, interval=0.5, what="the dashboard on http://localhost:8080")
        assert "<title>" in html
        assert "PayFlow" in html
    finally:
        forward.terminate()
        forward.wait(timeout=10)


def _listening_inodes() -> dict[int, str]:
    """Listening TCP sockets of the host's network namespace: inode -> local address."""
    found: dict[int, str] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            f = line.split()
            if f[3] == "0A":  # LISTEN
                found[int(f[9])] = f[1]
    return found


def _is_loopback(hex_addr: str) -> bool:
    ip = hex_addr.split(":")[0]
    if len(ip) == 8:  # IPv4, little-endian: 127.x.x.x ends in 7F
        return ip.endswith("7F")
    return ip == "00000000000000000000000001000000"  # ::1


def test_nothing_of_the_demo_listens_on_a_non_loopback_host_address(demo: Cluster) -> None:
    assert demo.state is not None
    ours = set(pids_mentioning(str(demo.state)))
    for pid_dir in Path("/sys/fs/cgroup/memory").glob(f"{hostcfg.CGROUP_ROOT}-*"):
        for procs in pid_dir.rglob("cgroup.procs"):
            ours |= {int(p) for p in procs.read_text().split()}
    # /proc/net/tcp of this process lists the host's sockets only: a socket of the node's (or a
    # pod's) namespace is not in it, whatever process holds it.
    listening = _listening_inodes()
    checked = 0
    for pid in ours:
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inode = int(target[8:-1])
                    if inode in listening:
                        checked += 1
                        assert _is_loopback(listening[inode]), (pid, listening[inode])
    assert checked >= 2, "the portal's listeners (API server, app) were found and checked"
