"""End-to-end tests: the chart's real pods on a real node.

By default the suite runs ``make demo``'s own command (``payflow-stack up --demo``) in a
throwaway state directory: the local node (the control plane, the kubelet, containerd and
CoreDNS in a network namespace of their own), the images built and imported, the chart
installed with real pods. It is taken down at the end, and with ``--owner`` it goes down also
when this test run is killed. Set
PAYFLOW_E2E_KUBECONFIG to run the same tests against another cluster with PayFlow installed
(``make kind-up`` then ``make e2e-kind``).

Scenario tests run the seed's commands verbatim in a shell that has sourced the stack's env
file (``source .payflow/env`` for a user of ``make demo``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from payflow import naming
from payflow.devstack import hostcfg, tools
from payflow.devstack.cli import DEMO_UP_TIMEOUT, invoke
from payflow.devstack.process import describe_pids, pids_mentioning

NS = os.environ.get("PAYFLOW_E2E_NAMESPACE", "demo")
RELEASE = os.environ.get("PAYFLOW_E2E_RELEASE", "payflow")


@dataclass
class Cluster:
    """A cluster with PayFlow installed, as a user's shell sees it."""

    kubeconfig: Path
    env_file: Path
    state: Path | None = None  # the local demo's state directory (None on another cluster)
    up_output: str = ""

    @property
    def status(self) -> dict[str, Any]:
        assert self.state is not None, "only the local demo has a status"
        return dict(json.loads((self.state / "status.json").read_text()))

    @property
    def app_url(self) -> str:
        return str(self.status["demo"]["app_url"])

    def get(self, path: str) -> Any:
        """GET ``path`` of the app on the host's loopback forward, as a browser would."""
        with urllib.request.urlopen(self.app_url + path, timeout=10) as resp:  # noqa: S310 (loopback)
            return json.load(resp)

    def sh(self, command: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess[str]:
        """``command`` in bash after ``source <env file>``, from the repo root: as a user types it."""
        proc = subprocess.run(
            ["bash", "-c", f"source {self.env_file} && {command}"],
            cwd=tools.REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={k: v for k, v in os.environ.items() if k != "KUBECONFIG"},
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"`{command}` failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc

    def k(self, *args: str, input: str | None = None, namespace: str | None = NS) -> str:
        argv = [str(tools.find("kubectl").path), "--kubeconfig", str(self.kubeconfig)]
        if namespace:
            argv += ["-n", namespace]
        proc = subprocess.run([*argv, *args], input=input, capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)}: {proc.stderr}")
        return proc.stdout

    def apply_incident(self, name: str, faults: str, delivery: str = "live") -> str:
        """``kubectl apply`` of a PayFlowIncident on the release; its name."""
        self.k(
            "apply",
            "-f",
            "-",
            input=(
                f"apiVersion: {naming.GROUP}/{naming.VERSION}\nkind: {naming.KIND}\n"
                f"metadata: {{name: {name}}}\n"
                f"spec: {{target: {RELEASE}, delivery: {delivery}, faults: {faults}}}\n"
            ),
        )
        return name

    def kubectl(self, *args: str, input: str | None = None) -> str:
        """kubectl as the user's shell runs it (the namespace as the arguments say)."""
        return self.k(*args, input=input, namespace=None)

    def json(self, *args: str) -> Any:
        return json.loads(self.k(*args, "-o", "json"))

    def app_pods(self) -> list[dict[str, Any]]:
        return list(self.json("get", "pods", "-l", naming.app_selector(RELEASE))["items"])

    def pod_get(self, pod: str, path: str, port: int = 8080) -> Any:
        """GET ``path`` from one pod through the API server's pod proxy (no port-forward)."""
        return json.loads(self.k("get", "--raw", f"/api/v1/namespaces/{NS}/pods/{pod}:{port}/proxy{path}"))

    def app_config(self) -> dict[str, Any]:
        """GET /api/config of the app through the Service proxy."""
        return dict(
            json.loads(
                self.k("get", "--raw", f"/api/v1/namespaces/{NS}/services/{RELEASE}:80/proxy/api/config")
            )
        )


def _write_env(path: Path, kubeconfig: Path) -> None:
    bins = ":".join(str(d) for d in tools.bin_dirs())
    path.write_text(f'export KUBECONFIG={kubeconfig}\nexport PATH={bins}:"$PATH"\n')


@pytest.fixture(scope="package")
def cluster() -> Iterator[Cluster]:
    given = os.environ.get("PAYFLOW_E2E_KUBECONFIG")
    if given:
        env_dir = Path(tempfile.mkdtemp(prefix="payflow-e2e-"))
        _write_env(env_dir / "env", Path(given))
        yield Cluster(Path(given), env_dir / "env")
        shutil.rmtree(env_dir, ignore_errors=True)
        return
    # A short path: the kubelet's and containerd's Unix sockets live below it.
    state = Path(tempfile.mkdtemp(prefix="pfn-", dir="/tmp"))
    try:
        up = invoke(state, "up", "--demo", f"--owner={os.getpid()}", timeout=DEMO_UP_TIMEOUT + 60)
        log = state / "supervisor.log"
        assert up.returncode == 0, f"{up.stdout}\n{up.stderr}\n{log.read_text() if log.exists() else ''}"
        print(up.stdout, flush=True)
        yield Cluster(state / "stack" / "kubeconfig", state / "env", state, up.stdout)
    finally:
        down = invoke(state, "down")
        left = pids_mentioning(str(state))
        shutil.rmtree(state, ignore_errors=True)
        assert down.returncode == 0, down.stdout + down.stderr
        assert not left, f"processes left after down: {describe_pids(left)}"
        assert not hostcfg.leftovers(), hostcfg.leftovers()


@pytest.fixture(scope="package")
def e2e_kubeconfig(cluster: Cluster) -> Path:
    return cluster.kubeconfig


@pytest.fixture(scope="package")
def demo(cluster: Cluster) -> Cluster:
    """The local demo (``make demo``'s stack); its status and its loopback URL."""
    if cluster.state is None:
        pytest.skip("the local demo's own status and URL (PAYFLOW_E2E_KUBECONFIG names another cluster)")
    return cluster
