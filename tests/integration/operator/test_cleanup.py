"""`payflow-operator cleanup` (Helm's pre-delete hook): an uninstall never leaves a namespace
stuck, whether the operator is there to clear the incidents or not."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from payflow import naming
from tests.integration.operator.conftest import BASELINE, REPO, Cluster, Operator, expected, incident
from tests.support import wait_for

FAULTS = {"latency": {"delayMs": 700}}
ROLLOUT: dict[str, Any] = {"oom": {}}


def _cleanup(kubeconfig: Path, namespace: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "payflow.operator.main", "cleanup", "--namespace", namespace,
         "--target", "payflow", "--timeout", str(timeout)],
        env={**os.environ, "KUBECONFIG": str(kubeconfig)},
        cwd=REPO, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip


def _stamp(cluster: Cluster) -> dict[str, str]:
    body = cluster.get("deployment", "payflow-api")
    assert body is not None
    return dict(body["spec"]["template"]["metadata"].get("annotations") or {})


def test_cleanup_with_the_operator_running(operator: Operator, release: Cluster, kubeconfig: Path) -> None:
    release.apply(incident("one", FAULTS))
    release.apply(incident("two", ROLLOUT, delivery="rollout"))
    release.apply(incident("other-release", FAULTS, target="another"))
    wait_for(lambda: release.faults() == expected(FAULTS, ROLLOUT), 10, "injected")

    proc = _cleanup(kubeconfig, release.namespace, timeout=20)
    assert "the operator cleared them" in proc.stdout
    assert release.incident("one") is None
    assert release.incident("two") is None
    assert release.incident("other-release") is not None  # another release's incident stays
    assert release.faults() == BASELINE
    assert naming.DIGEST_ANNOTATION not in _stamp(release)


def test_cleanup_without_an_operator_restores_and_unblocks(
    operator: Operator, release: Cluster, kubeconfig: Path
) -> None:
    release.apply(incident("one", FAULTS))
    release.apply(incident("two", ROLLOUT, delivery="rollout"))
    wait_for(lambda: release.faults() == expected(FAULTS, ROLLOUT), 10, "injected")
    wait_for(lambda: naming.DIGEST_ANNOTATION in _stamp(release), 10, "the rollout stamp")
    operator.process.send_signal(signal.SIGKILL)
    operator.stop()

    proc = _cleanup(kubeconfig, release.namespace, timeout=1)
    assert "finalizers removed" in proc.stdout
    wait_for(
        lambda: release.incident("one") is None and release.incident("two") is None, 10, "incidents gone"
    )
    assert release.faults() == BASELINE
    assert release.configmap_data()["APP_UNRELATED_KEY"] == "kept"
    assert naming.DIGEST_ANNOTATION not in _stamp(release)
