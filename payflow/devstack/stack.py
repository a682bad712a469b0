"""The local stack: which processes, with which flags, started in which order.

Two shapes:

* **processes** (``ALL_COMPONENTS``, the fast tests): etcd, PostgreSQL and Redis together, then
  kube-apiserver once etcd answers, then kube-controller-manager; all on the host's loopback.
* **a node** (``NODE_COMPONENTS``, ``make demo`` and the e2e tests): the guard makes a network
  namespace of the stack's own (nodeguard.py); etcd, the API server, the controller-manager,
  the scheduler, containerd, the kubelet, kube-proxy and CoreDNS run inside it on the node's
  address, in the stack's cgroups; the portal forwards the host's loopback into it. PostgreSQL
  and Redis are then the chart's pods.

Ports, passwords and certificates are chosen once and kept in ``<workdir>/stack.json``, so a
component can be stopped and started again (by a test, or by the supervisor of ``make up``) as
the same server.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import sys
import time
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from payflow.devstack import hostcfg, node, tools
from payflow.devstack.pki import Pki
from payflow.devstack.process import Process, ProcessFailedError, free_port

ALL_COMPONENTS = ("etcd", "postgres", "redis", "kube-apiserver", "kube-controller-manager")
NODE_COMPONENTS = (
    "netns",
    "etcd",
    "containerd",
    "portal",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
    "kube-proxy",
    "coredns",
    "provisioner",
)
# Only on a node; any of them makes a stack a node (with the guard and the portal).
_NODE_ONLY = {
    "netns",
    "containerd",
    "portal",
    "kube-scheduler",
    "kubelet",
    "kube-proxy",
    "coredns",
    "provisioner",
}
_REQUIRES = {
    "kube-apiserver": ("etcd",),
    "kube-controller-manager": ("kube-apiserver",),
    "kube-scheduler": ("kube-apiserver",),
    "kubelet": ("kube-apiserver", "containerd"),
    "kube-proxy": ("kube-apiserver",),
    "coredns": ("kube-apiserver",),
    "provisioner": ("kube-apiserver",),
}
# Start order: each phase starts together, and waits for the phase before it.
_PHASES = (
    ("netns",),
    ("etcd", "postgres", "redis", "containerd", "portal"),
    ("kube-apiserver",),
    ("kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy", "coredns", "provisioner"),
)

# The host ports each component listens on (all on the stack's loopback host). On a node,
# only the portal has any: the rest listen inside the node (node.NODE_PORTS).
PORTS: dict[str, tuple[str, ...]] = {
    "etcd": ("etcd", "etcd-peer"),
    "postgres": ("postgres",),
    "redis": ("redis",),
    "kube-apiserver": ("kube-apiserver",),
    "kube-controller-manager": ("kube-controller-manager",),
    "portal": ("kube-apiserver", "app"),
}
# Inside the node's namespaces (nsenter), in its cgroups; the guard and the portal are not.
_ON_HOST = {"netns", "portal", "provisioner"}

# How each component is asked to stop (then SIGKILL after the timeout). PostgreSQL gets SIGINT,
# its fast shutdown (the official image's STOPSIGNAL): SIGTERM is its smart shutdown, which waits
# for every client session to end, and a connection pool never ends them, so it took the full
# timeout and then a SIGKILL, which with synchronous_commit=off loses commits already acknowledged.
STOP_SIGNALS = {"postgres": signal.SIGINT}

DATABASE_NAME = "payflow"
PG_USER = "postgres"


def with_requirements(names: Iterable[str]) -> tuple[str, ...]:
    """``names`` plus everything they need, in start order."""
    wanted = set(names)
    known = set(ALL_COMPONENTS) | set(NODE_COMPONENTS)
    unknown = wanted - known
    if unknown:
        raise ValueError(f"unknown components {sorted(unknown)}; known: {', '.join(sorted(known))}")
    if wanted & _NODE_ONLY:
        wanted |= {"netns", "portal"}
        if not wanted <= set(NODE_COMPONENTS):
            extra = sorted(wanted - set(NODE_COMPONENTS))
            raise ValueError(f"{', '.join(extra)} cannot run beside a node (the chart runs them as pods)")
    changed = True
    while changed:
        changed = False
        for name in list(wanted):
            for dep in _REQUIRES.get(name, ()):
                if dep not in wanted:
                    wanted.add(dep)
                    changed = True
    return tuple(n for phase in _PHASES for n in phase if n in wanted)


@dataclass
class StackConfig:
    """What a stack is made of; saved so that a restart reuses the same ports and secrets."""

    workdir: Path
    components: tuple[str, ...] = ALL_COMPONENTS
    host: str = "127.0.0.1"
    ports: dict[str, int] = field(default_factory=dict)
    pg_password: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    redis_password: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    # False for `make up`: its processes must outlive the command that starts them.
    die_with_parent: bool = True

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir).resolve()
        self.components = with_requirements(self.components)
        for comp in self.components:
            if self.node and comp != "portal":
                continue
            for port_name in PORTS.get(comp, ()):
                self.ports.setdefault(port_name, free_port(self.host))

    @property
    def node(self) -> bool:
        return "netns" in self.components

    @property
    def state_file(self) -> Path:
        return self.workdir / "stack.json"

    def save(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        data = asdict(self)
        data["workdir"] = str(self.workdir)
        self.state_file.write_text(json.dumps(data, indent=2))
        self.state_file.chmod(0o600)

    @classmethod
    def load(cls, workdir: Path) -> StackConfig:
        data = json.loads((Path(workdir) / "stack.json").read_text())
        data["workdir"] = Path(data["workdir"])
        data["components"] = tuple(data["components"])
        return cls(**data)


def _allow_traverse(path: Path) -> None:
    """Let other users pass through ``path`` and its ancestors that we own (o+x, not o+r):
    PostgreSQL refuses to run as root, so its server runs as the ``postgres`` user, inside a
    throwaway directory that may sit below 0700 directories (pytest's tmp_path does)."""
    for d in (path, *path.parents):
        st = d.stat()
        if st.st_uid == os.geteuid() and not st.st_mode & 0o001:
            d.chmod(st.st_mode | 0o001)


class LocalStack:
    """Start, stop and describe the processes of one local stack."""

    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self.workdir = config.workdir
        self.pki = Pki(self.workdir / "pki")
        self.logs = self.workdir / "logs"
        self.processes: dict[str, Process] = {}
        self.timings: dict[str, float] = {}
        self.layout = node.NodeLayout(self.workdir)
        self._netns: node.NetnsRunner | None = None

    # --- what a client needs -------------------------------------------------------------

    @property
    def host(self) -> str:
        return self.config.host

    def port(self, name: str) -> int:
        return self.config.ports[name]

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "kubeconfig"

    @property
    def apiserver_url(self) -> str:
        return f"https://{self.host}:{self.port('kube-apiserver')}"

    @property
    def is_node(self) -> bool:
        return self.config.node

    def _bind(self, name: str) -> tuple[str, int]:
        """Where component port ``name`` listens: inside the node, or on the host's loopback."""
        if self.is_node:
            return node.NODE_IP, node.NODE_PORTS[name]
        return self.host, self.port(name)

    @property
    def guard(self) -> node.GuardInfo:
        """The running node's guard (its PID, its cgroups); only on a node."""
        return node.GuardInfo.load(self.layout.guard_state)

    @property
    def netns(self) -> node.NetnsRunner:
        """Runs calls inside the node's network namespace (health checks, test clients)."""
        pid = self.guard.pid
        if self._netns is None or self._netns.pid != pid:
            if self._netns is not None:
                self._netns.close()
            self._netns = node.NetnsRunner(pid)
        return self._netns

    def in_node(self, argv: list[str]) -> list[str]:
        """``argv`` run inside the node's network and mount namespaces."""
        return ["nsenter", f"--target={self.guard.pid}", "--net", "--mount", "--", *argv]

    @property
    def database_url(self) -> str:
        c = self.config
        return f"postgresql://{PG_USER}:{c.pg_password}@{c.host}:{c.ports['postgres']}/{DATABASE_NAME}"

    @property
    def redis_url(self) -> str:
        c = self.config
        return f"redis://:{c.redis_password}@{c.host}:{c.ports['redis']}/0"

    def env(self) -> dict[str, str]:
        """The variables a shell or a child process needs to reach this stack."""
        env: dict[str, str] = {}
        if "kube-apiserver" in self.config.components:
            env["KUBECONFIG"] = str(self.kubeconfig)
        if "postgres" in self.config.components:
            env["DATABASE_URL"] = self.database_url
        if "redis" in self.config.components:
            env["REDIS_URL"] = self.redis_url
        return env

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> dict[str, float]:
        """Start every component not already running; the seconds each took to be ready.

        On any failure, or an interrupt, whatever this call started is stopped again."""
        self.config.save()
        if self.is_node:  # a node whose guard was killed (not interrupted) left its cgroups
            for line in hostcfg.sweep_stale():
                print(f"swept before the start: {line}", flush=True)
        started: list[str] = []
        try:
            for phase in _PHASES:
                names = [n for n in phase if n in self.config.components and not self.running(n)]
                for name in names:
                    self._prepare(name)
                    self._launch(name)
                    started.append(name)
                for name in names:
                    self.timings[name] = self._wait_ready(name)
                    self._after_ready(name)
        except BaseException:
            for name in reversed(started):
                self.stop_component(name)
            raise
        return dict(self.timings)

    def start_component(self, name: str) -> float:
        """Start one component again (same port, same data); the seconds until it is ready."""
        self._prepare(name)
        self._launch(name)
        self.timings[name] = self._wait_ready(name)
        self._after_ready(name)
        return self.timings[name]

    def stop_component(self, name: str, timeout: float = 10.0) -> None:
        proc = self.processes.get(name)
        if proc is not None:
            proc.stop(timeout=timeout, sig=STOP_SIGNALS.get(name, signal.SIGTERM))

    def stop(self) -> None:
        for name in reversed(self.config.components):
            self.stop_component(name)
        if self._netns is not None:
            self._netns.close()
            self._netns = None

    def running(self, name: str) -> bool:
        proc = self.processes.get(name)
        return proc is not None and proc.running

    def remove(self) -> None:
        """Stop everything and delete the throwaway directory."""
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> LocalStack:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- per component ------------------------------------------------------------------

    def _prepare(self, name: str) -> None:
        getattr(self, "_prepare_" + name.replace("-", "_"), lambda: None)()

    def _launch(self, name: str) -> None:
        argv, user, env = getattr(self, "_argv_" + name.replace("-", "_"))()
        cgroups: list[str] = []
        if self.is_node and name != "netns":
            cgroups = [f"{d}/cgroup.procs" for d in self.guard.cgroups]
            if name not in _ON_HOST:
                argv = self.in_node(argv)
        proc = Process(
            name=name,
            argv=argv,
            log_path=self.logs / f"{name}.log",
            env=env,
            cwd=self.workdir,
            user=user,
            # The guard must outlive us: it is what takes the node down when we die.
            die_with_parent=self.config.die_with_parent and name != "netns",
            cgroups=cgroups,
            stdin_pipe=name == "netns",
        )
        proc.start()
        self.processes[name] = proc

    def _wait_ready(self, name: str) -> float:
        check = getattr(self, "_ready_" + name.replace("-", "_"))
        if self.is_node and name not in _ON_HOST:
            inner = check
            check = lambda: self.netns.call(inner, timeout=5)  # noqa: E731
        timeout = 60.0 if name.startswith("kube") else 30.0
        return self.processes[name].wait_ready(check, timeout=timeout)

    def _after_ready(self, name: str) -> None:
        getattr(self, "_after_" + name.replace("-", "_"), lambda: None)()

    # etcd

    def _argv_etcd(self) -> tuple[list[str], str | None, dict[str, str] | None]:
        (h, port), (_, peer_port) = self._bind("etcd"), self._bind("etcd-peer")
        client, peer = f"http://{h}:{port}", f"http://{h}:{peer_port}"
        argv = [
            str(tools.find("etcd").path),
            "--name=payflow",
            f"--data-dir={self.workdir / 'etcd'}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=payflow={peer}",
            "--unsafe-no-fsync=true",  # a throwaway store: durability is not the point here
            "--log-level=warn",
        ]
        return argv, None, None

    def _ready_etcd(self) -> bool:
        h, port = self._bind("etcd")
        url = f"http://{h}:{port}/health"
        with urllib.request.urlopen(url, timeout=1) as resp:
            return bool(json.load(resp).get("health") == "true")

    # PostgreSQL: a cluster of its own, owned by an unprivileged user when we are root.

    @property
    def _pg_user(self) -> str | None:
        return "postgres" if os.geteuid() == 0 else None

    @property
    def _pg_data(self) -> Path:
        return self.workdir / "postgres" / "data"

    def _prepare_postgres(self) -> None:
        base = self.workdir / "postgres"
        if (self._pg_data / "PG_VERSION").exists():
            return
        base.mkdir(parents=True, exist_ok=True)
        pwfile = base / "pwfile"
        pwfile.write_text(self.config.pg_password + "\n")
        if self._pg_user:
            _allow_traverse(base.parent)  # the server's user must reach its directory
            for p in (base, pwfile):
                shutil.chown(p, self._pg_user, self._pg_user)
        argv = [
            str(tools.postgres_bindir() / "initdb"),
            f"--pgdata={self._pg_data}",
            f"--username={PG_USER}",
            f"--pwfile={pwfile}",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        ]
        proc = Process("initdb", argv, self.logs / "initdb.log", cwd=base, user=self._pg_user)
        proc.start()
        assert proc.popen is not None
        code = proc.popen.wait(timeout=120)
        proc.stop()
        pwfile.unlink()
        if code != 0:
            raise ProcessFailedError(f"initdb failed with code {code}:\n{proc.log_tail()}")

    def _argv_postgres(self) -> tuple[list[str], str | None, dict[str, str] | None]:
        argv = [
            str(tools.postgres_bindir() / "postgres"),
            "-D",
            str(self._pg_data),
            "-p",
            str(self.port("postgres")),
            "-c",  # TCP only: a deep throwaway directory can pass the 107-byte socket path limit
            "unix_socket_directories=",
            "-c",
            f"listen_addresses={self.host}",
            "-c",
            "max_connections=300",
            "-c",
            "fsync=off",  # throwaway data: speed over durability
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
            "-c",
            "logging_collector=off",
        ]
        return argv, self._pg_user, None

    def _ready_postgres(self) -> bool:
        import psycopg

        c = self.config
        with psycopg.connect(
            host=c.host,
            port=c.ports["postgres"],
            user=PG_USER,
            password=c.pg_password,
            dbname="postgres",
            connect_timeout=2,
        ) as conn:
            conn.execute("SELECT 1")
        return True

    def _after_postgres(self) -> None:
        import psycopg

        c = self.config
        with psycopg.connect(
            host=c.host,
            port=c.ports["postgres"],
            user=PG_USER,
            password=c.pg_password,
            dbname="postgres",
            autocommit=True,
        ) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE_NAME,)).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{DATABASE_NAME}"')

    # Redis: a cache, so no persistence at all.

    def _argv_redis(self) -> tuple[list[str], str | None, dict[str, str] | None]:
        d = self.workdir / "redis"
        d.mkdir(parents=True, exist_ok=True)
        conf = d / "redis.conf"  # the password stays out of the command line
        conf.write_text(
            f'port {self.port("redis")}\nbind {self.host}\nsave ""\nappendonly no\n'
            f"dir {d}\nrequirepass {self.config.redis_password}\nprotected-mode yes\n"
        )
        conf.chmod(0o600)
        return [str(tools.redis_server()), str(conf)], None, None

    def _ready_redis(self) -> bool:
        with socket.create_connection((self.host, self.port("redis")), timeout=1) as s:
            s.sendall(f"AUTH {self.config.redis_password}\r\nPING\r\n".encode())
            deadline = time.monotonic() + 1
            data = b""
            while b"PONG" not in data and time.monotonic() < deadline:
                data += s.recv(64)
            return b"+PONG" in data

    # kube-apiserver

    def _prepare_kube_apiserver(self) -> None:
        if not self.pki.exists():
            self.pki.generate(
                [
                    self.host,
                    node.NODE_IP,
                    "localhost",
                    "::1",
                    "kubernetes",
                    "kubernetes.default",
                    "kubernetes.default.svc",
                    "kubernetes.default.svc.cluster.local",
                    "10.96.0.1",
                ]
            )
        self._write_kubeconfig(self.kubeconfig, "payflow-admin", self.pki.admin_cert, self.pki.admin_key)
        if self.is_node:  # the node's own parts reach the API server at its address inside
            h, port = self._bind("kube-apiserver")
            self._write_kubeconfig(
                self.layout.kubeconfig,
                "payflow-admin",
                self.pki.admin_cert,
                self.pki.admin_key,
                f"https://{h}:{port}",
            )

    def _write_kubeconfig(
        self, path: Path, user: str, cert: Path, key: Path, server: str | None = None
    ) -> None:
        def b64(p: Path) -> str:
            return base64.b64encode(p.read_bytes()).decode()

        creds = {"client-certificate-data": b64(cert), "client-key-data": b64(key)}
        self._kubeconfig(path, user, creds, server=server)

    def write_token_kubeconfig(self, path: Path, token: str, namespace: str = "default") -> Path:
        """A kubeconfig that authenticates with ``token`` only (a ServiceAccount's, say)."""
        self._kubeconfig(path, "token-user", {"token": token}, namespace)
        return path

    def _kubeconfig(
        self,
        path: Path,
        user: str,
        credentials: dict[str, str],
        namespace: str = "default",
        server: str | None = None,
    ) -> None:
        ca = base64.b64encode(self.pki.ca_cert.read_bytes()).decode()
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "payflow-local",
                    "cluster": {"server": server or self.apiserver_url, "certificate-authority-data": ca},
                }
            ],
            "users": [{"name": user, "user": credentials}],
            "contexts": [
                {
                    "name": "payflow-local",
                    "context": {"cluster": "payflow-local", "user": user, "namespace": namespace},
                }
            ],
            "current-context": "payflow-local",
        }
        path.write_text(json.dumps(config, indent=2))
        path.chmod(0o600)

    def _argv_kube_apiserver(self) -> tuple[list[str], str | None, dict[str, str] | None]:
        k = self.pki
        (etcd_host, etcd_port), (h, port) = self._bind("etcd"), self._bind("kube-apiserver")
        argv = [
            str(tools.find("kube-apiserver").path),
            f"--etcd-servers=http://{etcd_host}:{etcd_port}",
            f"--bind-address={h}",
            f"--advertise-address={h}",
            f"--secure-port={port}",
            f"--cert-dir={self.workdir / 'pki'}",
            f"--tls-cert-file={k.serving_cert}",
            f"--tls-private-key-file={k.serving_key}",
            f"--client-ca-file={k.ca_cert}",
            "--authorization-mode=RBAC",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={k.sa_pub}",
            f"--service-account-signing-key-file={k.sa_key}",
            "--service-cluster-ip-range=10.96.0.0/16",
            "--allow-privileged=true",
            "--profiling=false",
            "--v=1",
        ]
        if self.is_node:  # logs, exec, port-forward and the kubelet's metrics go through it
            argv += [
                "--kubelet-preferred-address-types=InternalIP,Hostname",
                f"--kubelet-client-certificate={k.admin_cert}",
                f"--kubelet-client-key={k.admin_key}",
            ]
        return argv, None, None

    def _ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.pki.ca_cert))
        ctx.load_cert_chain(str(self.pki.admin_cert), str(self.pki.admin_key))
        return ctx

    def _ready_kube_apiserver(self) -> bool:
        h, port = self._bind("kube-apiserver")
        with urllib.request.urlopen(
            f"https://{h}:{port}/readyz", timeout=2, context=self._ssl_context()
        ) as resp:
            return bool(resp.status == 200)

    # kube-controller-manager: so that Deployments make ReplicaSets (and namespaces get
    # their default ServiceAccount and kube-root-ca.crt). No nodes: pods stay Pending.

    @property
    def _component_kubeconfig(self) -> Path:
        return self.layout.kubeconfig if self.is_node else self.kubeconfig

    def _argv_kube_controller_manager(self) -> tuple[list[str], str | None, dict[str, str] | None]:
        k = self.pki
        kc = self._component_kubeconfig
        h, port = self._bind("kube-controller-manager")
        argv = [
            str(tools.find("kube-controller-manager").path),
            *_control_plane_flags(kc, h, port, self.workdir / "kcm"),
            f"--service-account-private-key-file={k.sa_key}",
            f"--root-ca-file={k.ca_cert}",
            "--use-service-account-credentials=false",
        ]
        return argv, None, None

    def _ready_kube_controller_manager(self) -> bool:
        return _healthz(*self._bind("kube-controller-manager"), tls=True)

    # --- the node ---------------------------------------------------------------------------

    def _argv_netns(self) -> tuple[list[str], str | None, dict[str, str] | None]:
        self.layout.root.mkdir(parents=True, exist_ok=True)
        self.layout.guard_state.unlink(missing_ok=True)
        argv = [
            "unshare",
            "--net",
            "--mount",
            "--propagation",
            "slave",
            "--",
            sys.executable,
            "-P",
            "-m",
            "payflow.devstack.nodeguard",
            str(self.layout.root),
            node.NODE_IP,
            str(node.NODE_PREFIX),
            node.SERVICE_CIDR,
        ]
        return argv, None, None

    def _ready_netns(self) -> bool:
        return self.guard.pid == self.processes["netns"].pid

    def _after_netns(self) -> None:
        node.write_configs(self.layout, self.pki.ca_cert, self.guard.cgroup_name)

    def _prepare_containerd(self) -> None:
        if not self.pki.exists():  # the kubelet's configuration names the CA
            self._prepare_kube_apiserver()

    def _argv_containerd(self) -> tuple[list[str], str | None, dict[str, str] | None]:
        return ["containerd", "--config", str(self.layout.containerd_config)], None, None

    def _ready_containerd(self) -> bool:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(1)
            s.connect(f"/proc/{self.guard.pid}/root{node.CONTAINERD_SOCKET}")  # the node's private /run
        return True

    @property
    def ctr_command(self) -> list[str]:
        """``ctr`` against the node's containerd, up to its subcommand."""
        return self.in_node(["ctr", "--address", node.CONTAINERD_SOCKET])

    def ctr(self, *args: str) -> list[str]:
        """A ``ctr`` command line in the kubelet's image namespace (``k8s.io``)."""
        return [*self.ctr_command, "--namespace", "k8s.io", *args]

    def _argv_portal(self) -> tuple[list[str], str | None, dict[str, str] | None]:
        targets = self.layout.portal_targets
        if not targets.exists():
            h, port = self._bind("kube-apiserver")
            targets.write_text(json.dumps({"kube-apiserver": [h, port]}))
        specs = [f"{name}={self.host}:{self.port(name)}" for name in PORTS["portal"]]
        argv = [
            sys.executable,
            "-P",
            "-m",
            "payflow.devstack.portal",
            str(self.guard.pid),
            str(targets),
            *specs,
        ]
        return argv, None, None

    def _ready_portal(self) -> bool:
        with socket.create_connection((self.host, self.port("kube-apiserver")), timeout=1):
            return True

    def forward(self, name: str, host: str, port: int) -> str:
        """Point the portal's ``name`` listener at ``host:port`` inside the node; its URL."""
        targets = self.layout.portal_targets
        data = json.loads(targets.read_text())
        data[name] = [host, port]
        tmp = targets.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        tmp.replace(targets)
        return f"http://{self.host}:{self.port(name)}"

    def _argv_kube_scheduler(self) -> tuple[list[str], str | None, dict[str, str] | None]:
        kc = self._component_kubeconfig
        h, port = self._bind("kube-scheduler")
        argv = [
            str(tools.find("kube-scheduler").path),
            *_control_plane_flags(kc, h, port, self.layout.root / "scheduler"),
        ]
        return argv, None, None

    def _ready_kube_scheduler(self) -> bool:
        return _healthz(*self._bind("kube-scheduler"), tls=True)

    def _argv_kubelet(self) -> tuple[list[str], str | None, dict[str, str] | None]:
        argv = [
            str(tools.find("kubelet").path),
            f"--config={self.layout.kubelet_config}",
            f"--kubeconfig={self.layout.kubeconfig}",
            f"--root-dir={self.layout.kubelet_dir}",
            f"--cert-dir={self.layout.root / 'kubelet-pki'}",
            f"--hostname-override={node.NODE_NAME}",
            f"--node-ip={node.NODE_IP}",
            "--v=1",
        ]
        return argv, None, None

    def _ready_kubelet(self) -> bool:
        return _healthz(*self._bind("kubelet-healthz"), tls=False)

    def _argv_kube_proxy(self) -> tuple[list[str], str | None, dict[str, str] | None]:
        argv = [str(tools.find("kube-proxy").path), f"--config={self.layout.kube_proxy_config}", "--v=1"]
        return argv, None, None

    def _ready_kube_proxy(self) -> bool:
        return _healthz(*self._bind("kube-proxy-healthz"), tls=False)

    def _argv_coredns(self) -> tuple[list[str], str | None, dict[str, str] | None]:
        return [str(tools.find("coredns").path), "-conf", str(self.layout.corefile)], None, None

    def _ready_coredns(self) -> bool:
        h, port = self._bind("coredns-ready")
        with urllib.request.urlopen(f"http://{h}:{port}/ready", timeout=2) as resp:
            return bool(resp.status == 200)

    def _argv_provisioner(self) -> tuple[list[str], str | None, dict[str, str] | None]:
        argv = [
            sys.executable,
            "-P",
            "-m",
            "payflow.devstack.provisioner",
            str(self.kubeconfig),
            str(self.layout.volumes),
        ]
        return argv, None, None

    def _ready_provisioner(self) -> bool:
        return True


def _control_plane_flags(kubeconfig: Path, host: str, port: int, cert_dir: Path) -> list[str]:
    """What the controller-manager and the scheduler share: one kubeconfig for the API, for
    delegated authentication and authorization; a secure port of their own; no election."""
    return [
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        f"--bind-address={host}",
        f"--secure-port={port}",
        f"--cert-dir={cert_dir}",
        "--leader-elect=false",
        "--profiling=false",
        "--v=1",
    ]


def _healthz(host: str, port: int, tls: bool) -> bool:
    """``/healthz`` answers 200 (a self-signed serving certificate is fine: our own process)."""
    ctx = None
    if tls:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    scheme = "https" if tls else "http"
    with urllib.request.urlopen(f"{scheme}://{host}:{port}/healthz", timeout=2, context=ctx) as resp:  # noqa: S310
        return bool(resp.status == 200)


@contextlib.contextmanager
def local_stack(workdir: Path, components: Iterable[str] = ALL_COMPONENTS) -> Iterator[LocalStack]:
    """A stack in ``workdir`` for the duration of a ``with`` block (used by tests and benches)."""
    stack = LocalStack(StackConfig(workdir=workdir, components=tuple(components)))
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()
