"""A throwaway `make demo` for the benchmarks: ``payflow-stack up --demo`` in a short temp dir.

The demo is the real node (control plane, kubelet, containerd in a network namespace of the
stack's own) with the chart's pods. Only one node should run at a time on this 2-core machine,
so :func:`wait_for_quiet_machine` first waits (bounded) for any other node to go, and
:func:`demo_stack` always takes its own down, however the benchmark ends.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from payflow.devstack import hostcfg
from payflow.devstack.cli import DEMO_UP_TIMEOUT, invoke
from payflow.devstack.node import GuardInfo, NetnsRunner

NAMESPACE = "demo"
RELEASE = "payflow"


@dataclass(frozen=True)
class Demo:
    """A running demo as its user sees it: the env file's variables, the status, the node."""

    state: Path
    env: dict[str, str]
    up_seconds: float  # wall clock of `payflow-stack up --demo`, start to return
    up_output: str

    @property
    def status(self) -> dict[str, Any]:
        return dict(json.loads((self.state / "status.json").read_text()))

    @property
    def app_url(self) -> str:
        return str(self.status["demo"]["app_url"])

    @property
    def kubeconfig(self) -> Path:
        return Path(self.env["KUBECONFIG"])

    @property
    def guard(self) -> GuardInfo:
        """The node's guard: its PID (the node's network namespace) and its cgroups."""
        return GuardInfo.load(self.state / "stack" / "node" / "guard.json")

    def netns(self) -> NetnsRunner:
        """A thread inside the node's network namespace: it reaches pod IPs directly."""
        return NetnsRunner(self.guard.pid)

    def kubectl(self, *args: str, input: str | None = None, timeout: float = 120) -> str:
        proc = subprocess.run(
            ["kubectl", *args], env=self.env, input=input, capture_output=True, text=True, timeout=timeout
        )
        if proc.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)}: {proc.stderr}")
        return proc.stdout


def other_nodes() -> list[int]:
    """The guard PIDs of local nodes running on this host (a test run's, another demo's)."""
    return sorted(pid for pid in hostcfg.node_cgroups_on_host() if hostcfg.guard_alive(pid))


def wait_for_quiet_machine(max_wait: float = 1200.0, log: bool = True) -> float:
    """Wait until no other node runs (its figures would share the 2 cores), at most ``max_wait``
    seconds; the seconds waited. Past that the benchmark runs anyway and its load average says so."""
    t0 = time.monotonic()
    said = False
    while (nodes := other_nodes()) and time.monotonic() - t0 < max_wait:
        if log and not said:
            print(f"another node runs (guard {nodes}); waiting up to {max_wait:.0f} s for it", flush=True)
            said = True
        time.sleep(10)
    if nodes and log:
        print(f"still another node after {max_wait:.0f} s (guard {nodes}): running anyway", flush=True)
    return time.monotonic() - t0


def _source_env(env_file: Path) -> dict[str, str]:
    out = subprocess.run(
        ["bash", "-c", f"source {env_file} && env -0"], capture_output=True, check=True
    ).stdout.decode()
    return {**os.environ, **dict(kv.split("=", 1) for kv in out.split("\0") if "=" in kv)}


@contextlib.contextmanager
def demo_stack(load_rate: float | None = None) -> Iterator[Demo]:
    """``payflow-stack up --demo`` (the chart's default load, or ``load_rate`` requests/s; 0:
    none), stopped by ``down`` on the way out; it also stops if this process dies (``--owner``)."""
    # A short path: the kubelet's and containerd's Unix sockets live below it.
    state = Path(tempfile.mkdtemp(prefix="pfb-", dir="/tmp"))
    extra = [] if load_rate is None else [f"--load-rate={load_rate:g}"]
    try:
        t0 = time.monotonic()
        up = invoke(state, "up", "--demo", f"--owner={os.getpid()}", *extra, timeout=DEMO_UP_TIMEOUT + 60)
        seconds = time.monotonic() - t0
        if up.returncode != 0:
            log = state / "supervisor.log"
            raise RuntimeError(
                f"demo failed to start:\n{up.stdout}\n{up.stderr}\n{log.read_text() if log.exists() else ''}"
            )
        yield Demo(state, _source_env(state / "env"), seconds, up.stdout)
    finally:
        down = invoke(state, "down")
        shutil.rmtree(state, ignore_errors=True)
        if down.returncode != 0:
            print(f"payflow-stack down failed:\n{down.stdout}\n{down.stderr}", flush=True)
