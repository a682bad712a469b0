"""Can this machine run the local node? Checked before anything is built or started.

Each check names what is missing and how to get it; :func:`report` says what still works
without the node (the process stack of ``make up`` and the tests that need no pods).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

# Capability bits (linux/capability.h) the node needs: mounts, namespaces and cgroups
# (SYS_ADMIN), interfaces and iptables (NET_ADMIN), entering the namespaces (SYS_PTRACE is
# not needed; nsenter needs SYS_ADMIN), changing file owners for volumes (CHOWN).
_CAPS = {"CAP_CHOWN": 0, "CAP_NET_ADMIN": 12, "CAP_SYS_CHROOT": 18, "CAP_SYS_ADMIN": 21}
_COMMANDS = {
    "containerd": "containerd",
    "runc": "runc",
    "ctr": "containerd",
    "iptables": "iptables",
    "ip": "iproute2",
    "nsenter": "util-linux",
    "unshare": "util-linux",
    "buildah": "buildah",
    "mmdebstrap": "mmdebstrap",
}


@dataclass(frozen=True)
class Problem:
    what: str
    fix: str


def _effective_caps() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    return 0


def check_root() -> Problem | None:
    if os.geteuid() != 0:
        return Problem("not root", "the node (namespaces, cgroups, mounts) needs root: run as root")
    return None


def check_capabilities() -> Problem | None:
    caps = _effective_caps()
    missing = [name for name, bit in _CAPS.items() if not caps & (1 << bit)]
    if missing:
        return Problem(
            f"missing capabilities: {', '.join(missing)}", "run with them (a privileged container)"
        )
    return None


def check_namespaces() -> Problem | None:
    if not shutil.which("unshare"):
        return None  # named by check_commands
    proc = subprocess.run(["unshare", "--net", "--mount", "true"], capture_output=True, text=True, timeout=10)
    if proc.returncode != 0:
        return Problem(
            f"cannot create network and mount namespaces: {proc.stderr.strip()}",
            "the kernel or the container runtime forbids them (user namespaces alone do not do)",
        )
    return None


def check_overlayfs() -> Problem | None:
    if "overlay" not in Path("/proc/filesystems").read_text():
        return Problem(
            "no overlayfs in the kernel (/proc/filesystems)", "load the overlay module (modprobe overlay)"
        )
    return None


def check_memory_cgroup() -> Problem | None:
    mounts = Path("/proc/self/mounts").read_text().splitlines()
    v1 = any(
        m.split()[2] == "cgroup" and "memory" in m.split()[3].split(",") for m in mounts if len(m.split()) > 3
    )
    if not v1:
        return Problem(
            "no cgroup v1 memory controller mounted (OOMKilled needs it; the node runs on cgroup v1)",
            "mount the memory controller at /sys/fs/cgroup/memory",
        )
    return None


def check_commands() -> Problem | None:
    missing = sorted({pkg for cmd, pkg in _COMMANDS.items() if not shutil.which(cmd)})
    if missing:
        return Problem(f"missing Debian packages: {', '.join(missing)}", "make tools installs them")
    return None


CHECKS: tuple[Callable[[], Problem | None], ...] = (
    check_root,
    check_capabilities,
    check_namespaces,
    check_overlayfs,
    check_memory_cgroup,
    check_commands,
)


def check() -> list[Problem]:
    return [p for c in CHECKS if (p := c()) is not None]


def report(problems: list[Problem]) -> str:
    lines = [f"  - {p.what}: {p.fix}" for p in problems]
    return (
        "this machine cannot run the local node:\n"
        + "\n".join(lines)
        + "\nStill works without it: `make up` (etcd, kube-apiserver, PostgreSQL, Redis as processes), "
        "`make test-unit`, and the integration tests that need no pods. `make demo` and the e2e tests "
        "need the node; or point PAYFLOW_E2E_KUBECONFIG at another cluster (make kind-up)."
    )
