"""The local node's layout and configuration: pure builders of what each part is given.

One network namespace holds the control plane and the node (see nodeguard.py): etcd, the API
server, the controller-manager, the scheduler, containerd, the kubelet, kube-proxy and CoreDNS
all bind the node's address inside it. Pods get addresses on the bridge ``cni0``; Services are
kube-proxy's iptables rules, in that namespace only. The host reaches the API server and the app
through loopback forwards (portal.py).
"""

from __future__ import annotations

import ctypes
import json
import os
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

NODE_NAME = "payflow-node"
NODE_IP = "10.201.0.2"
NODE_PREFIX = 24
POD_CIDR = "10.244.0.0/24"
CLUSTER_CIDR = "10.244.0.0/16"
SERVICE_CIDR = "10.96.0.0/16"
CLUSTER_DOMAIN = "cluster.local"
CNI_BIN_DIR = "/usr/lib/cni"
CONTAINERD_SOCKET = "/run/containerd/containerd.sock"  # on the node's private /run
# Ports inside the node's namespace (its own, so fixed numbers are safe).
NODE_PORTS = {
    "etcd": 2379,
    "etcd-peer": 2380,
    "kube-apiserver": 6443,
    "kube-controller-manager": 10257,
    "kube-scheduler": 10259,
    "kubelet": 10250,
    "kubelet-healthz": 10248,
    "kube-proxy-metrics": 10249,
    "kube-proxy-healthz": 10256,
    "coredns": 53,
    "coredns-health": 8080,
    "coredns-ready": 8181,
}
# The sandbox ("pause") image the node is configured with; built locally (images.py).
PAUSE_IMAGE = "registry.k8s.io/pause:3.10"


@dataclass
class GuardInfo:
    """What the guard made, in ``<workdir>/node/guard.json`` once the node can be joined."""

    pid: int
    node_ip: str
    cgroup_name: str
    cgroups: list[str]
    created_dirs: list[str] = field(default_factory=list)

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self)))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> GuardInfo:
        return cls(**json.loads(path.read_text()))


@dataclass(frozen=True)
class NodeLayout:
    """Where the node keeps its files, below the stack's work directory."""

    workdir: Path

    @property
    def root(self) -> Path:
        return self.workdir / "node"

    @property
    def guard_state(self) -> Path:
        return self.root / "guard.json"

    @property
    def containerd_config(self) -> Path:
        return self.root / "containerd.toml"

    @property
    def containerd_root(self) -> Path:
        return self.root / "containerd"

    @property
    def cni_conf_dir(self) -> Path:
        return self.root / "cni"

    @property
    def cni_ipam_dir(self) -> Path:
        return self.root / "ipam"

    @property
    def kubelet_dir(self) -> Path:
        return self.root / "kubelet"

    @property
    def kubelet_config(self) -> Path:
        return self.root / "kubelet.yaml"

    @property
    def resolv_conf(self) -> Path:
        return self.root / "resolv.conf"

    @property
    def kube_proxy_config(self) -> Path:
        return self.root / "kube-proxy.yaml"

    @property
    def corefile(self) -> Path:
        return self.root / "Corefile"

    @property
    def kubeconfig(self) -> Path:
        """The admin kubeconfig the node's parts use: the API server at the node's address."""
        return self.root / "kubeconfig"

    @property
    def volumes(self) -> Path:
        return self.root / "volumes"

    @property
    def portal_targets(self) -> Path:
        return self.root / "portal.json"


def containerd_config(layout: NodeLayout) -> str:
    """containerd 1.6's configuration: its own root and socket, the CRI with runc (cgroupfs)."""
    return f"""version = 2
root = "{layout.containerd_root}"
state = "/run/containerd"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
                    "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs",
                    "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "{CONTAINERD_SOCKET}"

[metrics]
  address = ""

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  # The machine lacks CAP_SYS_RESOURCE: without this every sandbox fails to start.
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  disable_apparmor = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    discard_unpacked_layers = false
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{layout.cni_conf_dir}"
    max_conf_num = 1

[plugins."io.containerd.internal.v1.opt"]
  path = "{layout.containerd_root / "opt"}"
"""


def cni_conflist(layout: NodeLayout) -> dict[str, Any]:
    """A bridge with host-local addresses and port mappings; the gateway is the node itself."""
    return {
        "cniVersion": "1.0.0",
        "name": "payflow",
        "plugins": [
            {
                "type": "bridge",
                "bridge": "cni0",
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": POD_CIDR}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(layout.cni_ipam_dir),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def kubelet_config(layout: NodeLayout, ca_file: Path, cgroup_root: str) -> dict[str, Any]:
    """The KubeletConfiguration: cgroup v1 allowed, cgroupfs under the stack's own cgroup."""
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        # This machine's memory controller is on cgroup v1; 1.36 refuses it unless told.
        "failCgroupV1": False,
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": f"/{cgroup_root}",
        "address": NODE_IP,
        "port": NODE_PORTS["kubelet"],
        "readOnlyPort": 0,
        "healthzBindAddress": NODE_IP,
        "healthzPort": NODE_PORTS["kubelet-healthz"],
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(ca_file)},
        },
        "authorization": {"mode": "Webhook"},
        "clusterDomain": CLUSTER_DOMAIN,
        "clusterDNS": [NODE_IP],
        "resolvConf": str(layout.resolv_conf),
        "containerRuntimeEndpoint": f"unix://{CONTAINERD_SOCKET}",
        "volumePluginDir": str(layout.kubelet_dir / "volume-plugins"),
        "failSwapOn": False,
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "1%",
            "imagefs.available": "1%",
            "nodefs.inodesFree": "1%",
        },
        # Images are imported, never pulled: nothing may collect them.
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "serializeImagePulls": False,
        "maxPods": 60,
        "rotateCertificates": False,
        "protectKernelDefaults": False,
        "staticPodPath": "",
        "podPidsLimit": 4096,
    }


def kube_proxy_config(layout: NodeLayout) -> dict[str, Any]:
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(layout.kubeconfig)},
        "mode": "iptables",
        "bindAddress": NODE_IP,
        "healthzBindAddress": f"{NODE_IP}:{NODE_PORTS['kube-proxy-healthz']}",
        "metricsBindAddress": f"{NODE_IP}:{NODE_PORTS['kube-proxy-metrics']}",
        "clusterCIDR": CLUSTER_CIDR,
        "hostnameOverride": NODE_NAME,
        # Service traffic between pods of one bridge returns through the node (no br_netfilter).
        "iptables": {"masqueradeAll": True},
        # The host's conntrack table is not the node's to size.
        "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
    }


def corefile(layout: NodeLayout) -> str:
    """CoreDNS for Services and pods only: there is no upstream (nothing leaves the node)."""
    return f""".:{NODE_PORTS["coredns"]} {{
    bind {NODE_IP}
    errors
    health {NODE_IP}:{NODE_PORTS["coredns-health"]}
    ready {NODE_IP}:{NODE_PORTS["coredns-ready"]}
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        kubeconfig {layout.kubeconfig} payflow-local
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 5
    }}
    cache 5
}}
"""


def write_configs(layout: NodeLayout, ca_file: Path, cgroup_root: str) -> None:
    """Every configuration file of the node, written from the builders above."""
    for d in (
        layout.cni_conf_dir,
        layout.cni_ipam_dir,
        layout.kubelet_dir,
        layout.containerd_root,
        layout.volumes,
    ):
        d.mkdir(parents=True, exist_ok=True)
    layout.containerd_config.write_text(containerd_config(layout))
    (layout.cni_conf_dir / "10-payflow.conflist").write_text(json.dumps(cni_conflist(layout), indent=2))
    layout.resolv_conf.write_text("")
    layout.kubelet_config.write_text(json.dumps(kubelet_config(layout, ca_file, cgroup_root), indent=2))
    layout.kube_proxy_config.write_text(json.dumps(kube_proxy_config(layout), indent=2))
    layout.corefile.write_text(corefile(layout))


# --- calls made from inside the node's network namespace -----------------------------------

_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)
T = TypeVar("T")


class NetnsRunner:
    """A thread that lives in another network namespace: what it runs opens its sockets there.

    ``setns(CLONE_NEWNET)`` changes only the calling thread, so the rest of the process (a test,
    the supervisor) stays on the host while health checks and test clients reach the node's
    addresses."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._jobs: queue.Queue[tuple[Callable[[], Any], Future[Any]] | None] = queue.Queue()
        ready: Future[None] = Future()
        self._thread = threading.Thread(target=self._loop, args=(ready,), daemon=True, name=f"netns-{pid}")
        self._thread.start()
        ready.result(timeout=10)

    def _loop(self, ready: Future[None]) -> None:
        try:
            fd = os.open(f"/proc/{self.pid}/ns/net", os.O_RDONLY)
            try:
                if _libc.setns(fd, _CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns into the network namespace of {self.pid}: {os.strerror(err)}")
            finally:
                os.close(fd)
        except BaseException as exc:
            ready.set_exception(exc)
            return
        ready.set_result(None)
        while (job := self._jobs.get()) is not None:
            fn, fut = job
            if fut.set_running_or_notify_cancel():
                try:
                    fut.set_result(fn())
                except BaseException as exc:
                    fut.set_exception(exc)

    def call(self, fn: Callable[[], T], timeout: float = 30.0) -> T:
        fut: Future[T] = Future()
        self._jobs.put((fn, fut))
        return fut.result(timeout=timeout)

    def close(self) -> None:
        self._jobs.put(None)
