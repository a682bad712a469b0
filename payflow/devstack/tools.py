"""Where the binaries of the local stack are: one pinned version file, a cache keyed by version."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from functools import cache
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
VERSIONS_FILE = REPO_ROOT / "tools" / "versions.env"


class ToolMissingError(RuntimeError):
    """A binary the stack needs is neither cached nor given; ``make tools`` provides it."""


@cache
def pinned_versions() -> dict[str, str]:
    """The ``KEY=value`` lines of tools/versions.env."""
    versions: dict[str, str] = {}
    for raw in VERSIONS_FILE.read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            versions[key.strip()] = value.strip()
    return versions


def cache_root() -> Path:
    if explicit := os.environ.get("PAYFLOW_CACHE"):
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "payflow"


def _cache_dirs() -> dict[str, Path]:
    v = pinned_versions()
    root = cache_root()
    k8s = root / f"kubernetes-{v['KUBERNETES_VERSION']}"
    return {
        "kube-apiserver": k8s,
        "kube-controller-manager": k8s,
        "kube-scheduler": k8s,
        "kubelet": k8s,
        "kube-proxy": k8s,
        "kubectl": k8s,
        "etcd": root / f"etcd-{v['ETCD_VERSION']}",
        "helm": root / f"helm-{v['HELM_VERSION']}",
        "coredns": root / f"coredns-{v['COREDNS_VERSION']}",
    }


# The binaries `make tools` builds from Go modules (the rest come from Debian's packages).
GO_BUILT = frozenset(
    (
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "kubelet",
        "kube-proxy",
        "coredns",
    )
)


def _given_dirs() -> list[Path]:
    """Directories a user names for binaries they already have (envtest's KUBEBUILDER_ASSETS)."""
    return [Path(os.environ[k]) for k in ("PAYFLOW_ASSETS", "KUBEBUILDER_ASSETS") if os.environ.get(k)]


@dataclass(frozen=True)
class Tool:
    name: str
    path: Path


def find(name: str) -> Tool:
    """The binary ``name``: given directories first, then the version-keyed cache.

    kubectl falls back to the one on PATH only when its minor version is within one of the
    API server's (the supported skew); the others must come from the pinned build.
    """
    for d in _given_dirs():
        if (d / name).is_file() and os.access(d / name, os.X_OK):
            return Tool(name, d / name)
    cached = _cache_dirs()[name] / name
    if cached.is_file():
        return Tool(name, cached)
    if name == "kubectl" and (on_path := shutil.which("kubectl")) and kubectl_compatible(on_path):
        return Tool(name, Path(on_path))
    raise ToolMissingError(f"{name} not found in {cached.parent} nor in PAYFLOW_ASSETS; run `make tools`")


def kubectl_compatible(path: str) -> bool:
    want = int(pinned_versions()["KUBERNETES_VERSION"].split(".")[1])
    try:
        out = subprocess.run(
            [path, "version", "--client", "-o", "json"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    import json

    minor = json.loads(out)["clientVersion"]["minor"].rstrip("+")
    return minor.isdigit() and abs(int(minor) - want) <= 1


def bin_dirs() -> list[Path]:
    """Directories to put first on PATH so `kubectl` and `helm` are the pinned ones."""
    dirs: list[Path] = []
    for name in ("kubectl", "helm", "kube-apiserver", "etcd"):
        try:
            d = find(name).path.parent
        except ToolMissingError:
            continue
        if d not in dirs:
            dirs.append(d)
    return dirs


def postgres_bindir() -> Path:
    """The newest PostgreSQL server installed from Debian's packages (or on PATH)."""
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/postgres"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if candidates:
        return candidates[-1].parent
    if on_path := shutil.which("postgres"):
        return Path(on_path).resolve().parent
    raise ToolMissingError("PostgreSQL server not found; run `make tools` (installs Debian's postgresql)")


def redis_server() -> Path:
    if on_path := shutil.which("redis-server"):
        return Path(on_path)
    raise ToolMissingError("redis-server not found; run `make tools` (installs Debian's redis-server)")
