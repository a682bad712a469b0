"""The guard of one local node: it holds the node's namespaces and always takes the node down.

It is started as ``unshare --net --mount --propagation slave -- python -m
payflow.devstack.nodeguard WORKDIR`` by the process that owns the stack, with a pipe on its
standard input, and is the first process of the node's network and mount namespaces; every
other part of the node joins them (``nsenter --target <guard> --net --mount``). It:

1. sets up the network namespace: loopback, an interface with the node's address, a route
   for the Service range (there is no default route: nothing leaves the namespace);
2. gives the mount namespace private mounts for what containerd and the CNI plugins write to
   fixed host paths (``/run``, ``/var/lib/cni``), so none of it shows on the host;
3. creates the stack's cgroup in every cgroup v1 hierarchy, which every part of the node and
   every container joins, and records the host settings the kubelet changes (sysctls);
4. waits until its standard input closes (the owner stopped, crashed, or was SIGKILLed) or it is
   sent SIGTERM/SIGINT, then tears everything down: every process of the stack's cgroups is
   killed (containers, shims, containerd, the kubelet: nothing outlives it), the cgroups are
   removed, the sysctls restored when no other node runs, and the namespaces vanish with it.

The guard runs outside the stack's cgroups, so it survives the sweep it performs.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from payflow.devstack.hostcfg import (
    CGROUP_ROOT,
    KUBELET_SYSCTLS,
    NodeRegistry,
    cgroup_dirs,
    read_sysctls,
    write_sysctls,
)
from payflow.devstack.node import GuardInfo

KILL_DEADLINE = 20.0  # seconds to empty the cgroups before giving up (and saying so)


def _run(*argv: str) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {proc.stderr.strip()}")


def setup_network(node_ip: str, prefix: int, service_cidr: str) -> None:
    _run("ip", "link", "set", "lo", "up")
    # A bridge with no ports holds the address (this kernel has no dummy interfaces).
    _run("ip", "link", "add", "payflow0", "type", "bridge")
    _run("ip", "addr", "add", f"{node_ip}/{prefix}", "dev", "payflow0")
    _run("ip", "link", "set", "payflow0", "up")
    # Node processes (not pods) reach ClusterIPs too; kube-proxy's OUTPUT rules need a route.
    _run("ip", "route", "add", service_cidr, "dev", "payflow0")


def setup_mounts(created: list[str]) -> None:
    """Private tmpfs mounts over the fixed paths the runtime writes to. ``created`` receives the
    host directories made as mount points (removed again at teardown)."""
    for path in ("/run", "/var/lib/cni"):
        p = Path(path)
        if not p.exists():
            p.mkdir(parents=True)
            created.append(path)
        _run("mount", "-t", "tmpfs", "-o", "mode=0755,size=256m", "payflow-node", path)


def setup_cgroups(name: str) -> list[str]:
    made = []
    for d in cgroup_dirs(name):
        d.mkdir(exist_ok=True)
        made.append(str(d))
        if d.parent.name == "cpuset" or (d.parent / "cpuset.cpus").exists():
            # A new cpuset cgroup starts with no CPUs and no memory nodes: give it the parent's.
            for f in ("cpuset.cpus", "cpuset.mems"):
                (d / f).write_text((d.parent / f).read_text())
    return made


def _cgroup_pids(cgroup: Path) -> list[int]:
    pids: list[int] = []
    for procs in cgroup.rglob("cgroup.procs"):
        with contextlib.suppress(OSError):
            pids.extend(int(p) for p in procs.read_text().split())
    return pids


def kill_cgroups(cgroups: list[str], deadline: float) -> list[int]:
    """SIGKILL every process in the cgroups until none is left; the PIDs still there at the deadline."""
    freezer = next((Path(c) for c in cgroups if Path(c).parent.name == "freezer"), None)
    while True:
        pids = sorted({p for c in cgroups for p in _cgroup_pids(Path(c))} - {os.getpid()})
        if not pids:
            return []
        # Frozen, nothing can fork while it is being killed; thawed, the kills are delivered.
        if freezer is not None:
            with contextlib.suppress(OSError):
                (freezer / "freezer.state").write_text("FROZEN")
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if freezer is not None:
            with contextlib.suppress(OSError):
                (freezer / "freezer.state").write_text("THAWED")
        if time.monotonic() > deadline:
            return pids
        time.sleep(0.05)


def remove_cgroups(cgroups: list[str], deadline: float) -> list[str]:
    """rmdir every cgroup below and including each root, deepest first; what could not go."""
    left: list[str] = []
    for root in cgroups:
        r = Path(root)
        if not r.exists():
            continue
        dirs = sorted((p for p in r.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True)
        for d in [*dirs, r]:
            while True:
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        left.append(str(d))
                        break
                    time.sleep(0.05)
    return left


def teardown(state: GuardInfo, registry: NodeRegistry) -> list[str]:
    """Take the node down; the problems left (an empty list when everything went)."""
    problems: list[str] = []
    deadline = time.monotonic() + KILL_DEADLINE
    if left := kill_cgroups(state.cgroups, deadline):
        problems.append(f"processes still alive in the node's cgroups: {left}")
    if left_dirs := remove_cgroups(state.cgroups, deadline):
        problems.append(f"cgroups not removed: {left_dirs}")
    saved = registry.leave(state.pid)
    if saved is not None:  # the last node on this host: the kubelet's sysctls go back
        try:
            write_sysctls(saved)
        except OSError as exc:
            problems.append(f"sysctls not restored ({saved}): {exc}")
    for d in state.created_dirs:
        with contextlib.suppress(OSError):
            os.rmdir(d)  # the host sees it empty: its tmpfs lives only in this mount namespace
    return problems


def main(argv: list[str]) -> int:
    workdir = Path(argv[0])
    node_ip, prefix, service_cidr = argv[1], int(argv[2]), argv[3]
    state_file = workdir / "guard.json"
    registry = NodeRegistry.default()
    state = GuardInfo(
        pid=os.getpid(), node_ip=node_ip, cgroup_name=f"{CGROUP_ROOT}-{os.getpid()}", cgroups=[]
    )
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    try:
        registry.join(state.pid, read_sysctls(KUBELET_SYSCTLS))
        setup_network(node_ip, prefix, service_cidr)
        setup_mounts(state.created_dirs)
        state.cgroups = setup_cgroups(state.cgroup_name)
        state.save(state_file)
        print(f"node guard {state.pid}: ready ({node_ip}, cgroup {state.cgroup_name})", flush=True)

        def watch_owner() -> None:  # the owner's end of the pipe closes when it goes, however
            with contextlib.suppress(OSError):
                while os.read(0, 4096):
                    pass
            stop.set()

        threading.Thread(target=watch_owner, daemon=True).start()
        stop.wait()
    except Exception as exc:
        print(f"node guard {state.pid}: set-up failed: {exc}", file=sys.stderr, flush=True)
    finally:
        print(f"node guard {state.pid}: tearing down", flush=True)
        problems = teardown(state, registry)
        state_file.unlink(missing_ok=True)
        for p in problems:
            print(f"node guard {state.pid}: {p}", file=sys.stderr, flush=True)
        print(f"node guard {state.pid}: down{' with problems' if problems else ''}", flush=True)
    return 1 if problems else 0


if __name__ == "__main__":
    code = main(sys.argv[1:])
    sys.stdout.flush()
    os._exit(code)  # not sys.exit: the owner-watching thread may still be blocked in a read
