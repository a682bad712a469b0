"""What a local node changes on the host, and how it is put back: cgroups and sysctls.

The kubelet sets three kernel settings on the host (``KUBELET_SYSCTLS``). The first node to
start records their values in a registry under ``/var/tmp``; the last one to stop writes them
back. Each node's processes live in cgroups named ``payflow-node-<guard pid>`` in every cgroup v1
hierarchy; :func:`sweep_stale` removes what a node whose guard was killed left there.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

CGROUP_FS = Path("/sys/fs/cgroup")
CGROUP_ROOT = "payflow-node"
# What the kubelet writes on the host when it starts (pkg/kubelet/cm: setupKernelTunables).
KUBELET_SYSCTLS = ("vm/overcommit_memory", "kernel/panic", "kernel/panic_on_oops")
REGISTRY_DIR = Path("/var/tmp/payflow-nodes")  # noqa: S108 (root only; flock-guarded)


def v1_hierarchies() -> list[Path]:
    """The mounted cgroup v1 hierarchies (``/sys/fs/cgroup/<name>``), from /proc/self/mounts."""
    found = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[2] == "cgroup" and parts[1].startswith(str(CGROUP_FS) + "/"):
            found.append(Path(parts[1]))
    return sorted(set(found))


def cgroup_dirs(name: str) -> list[Path]:
    return [h / name for h in v1_hierarchies()]


def read_sysctls(names: tuple[str, ...]) -> dict[str, str]:
    return {n: (Path("/proc/sys") / n).read_text().strip() for n in names}


def write_sysctls(values: dict[str, str]) -> None:
    for name, value in values.items():
        path = Path("/proc/sys") / name
        if path.read_text().strip() != value:
            path.write_text(value + "\n")


def guard_alive(pid: int) -> bool:
    try:
        return b"payflow.devstack.nodeguard" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


@dataclass(frozen=True)
class NodeRegistry:
    """The nodes running on this host and the host's settings from before the first of them."""

    root: Path

    @classmethod
    def default(cls) -> NodeRegistry:
        return cls(REGISTRY_DIR)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / ".lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _entries(self) -> dict[int, dict[str, str]]:
        entries = {}
        for f in self.root.glob("*.json"):
            with contextlib.suppress(OSError, ValueError):
                entries[int(f.stem)] = dict(json.loads(f.read_text())["sysctls"])
        return entries

    def join(self, pid: int, current: dict[str, str]) -> None:
        """Register node ``pid``; the settings to restore are those before the first live node."""
        with self._locked():
            live = {p: s for p, s in self._entries().items() if p != pid and guard_alive(p)}
            saved = live[min(live)] if live else current
            (self.root / f"{pid}.json").write_text(json.dumps({"pid": pid, "sysctls": saved}))

    def leave(self, pid: int) -> dict[str, str] | None:
        """Unregister ``pid``; the settings to restore when no other node is left, else None."""
        with self._locked():
            entries = self._entries()
            (self.root / f"{pid}.json").unlink(missing_ok=True)
            others = [p for p in entries if p != pid and guard_alive(p)]
            for p in entries:
                if p != pid and p not in others:  # a dead guard's entry
                    (self.root / f"{p}.json").unlink(missing_ok=True)
            return None if others else entries.get(pid)

    def stale(self) -> list[int]:
        with self._locked():
            return [p for p in self._entries() if not guard_alive(p)]


def node_cgroups_on_host() -> dict[int, list[Path]]:
    """Every ``payflow-node-<pid>`` cgroup on the host, by guard PID."""
    found: dict[int, list[Path]] = {}
    for h in v1_hierarchies():
        for d in h.glob(f"{CGROUP_ROOT}-*"):
            with contextlib.suppress(ValueError):
                found.setdefault(int(d.name.rsplit("-", 1)[1]), []).append(d)
    return found


def sweep_stale(deadline_s: float = 20.0) -> list[str]:
    """Remove what nodes whose guard is gone left behind (it was SIGKILLed, say): processes in
    their cgroups, the cgroups, their registry entries, and the sysctls when no node is left.
    What it removed, one line each."""
    from payflow.devstack import nodeguard  # the guard's own teardown steps

    done: list[str] = []
    registry = NodeRegistry.default()
    deadline = time.monotonic() + deadline_s
    dead = {pid: dirs for pid, dirs in node_cgroups_on_host().items() if not guard_alive(pid)}
    for pid in sorted(set(dead) | set(registry.stale())):
        dirs = [str(d) for d in dead.get(pid, [])]
        if killed := nodeguard.kill_cgroups(dirs, deadline):
            done.append(f"node {pid}: processes would not die: {killed}")
        left = nodeguard.remove_cgroups(dirs, deadline)
        if dirs:
            done.append(
                f"node {pid}: removed {len(dirs) - len(left)} cgroups" + (f", left {left}" if left else "")
            )
        if (saved := registry.leave(pid)) is not None:
            write_sysctls(saved)
            done.append(f"node {pid}: host sysctls restored ({saved})")
    return done


def leftovers() -> list[str]:
    """What any node left on this host: the leak check of tests and ``make down``."""
    found = []
    for pid, dirs in node_cgroups_on_host().items():
        if not guard_alive(pid):
            found.append(f"cgroups of a dead node {pid}: {[str(d) for d in dirs]}")
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mounts").read_text().splitlines():
            # A node's mounts (its tmpfs, its containerd's overlays below <stack>/node/containerd)
            # live in its own mount namespace; one seen here escaped it. Other runtimes' mounts
            # (a Docker or containerd of the host) are not ours to report.
            if "payflow-node" in line or "/node/containerd/" in line:
                found.append(f"mount on the host: {line}")
    return found
