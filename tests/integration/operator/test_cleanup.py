"""`payflow-operator cleanup` (Helm's pre-delete hook): an uninstall leaves no incident of the
release and no fault in force, whether the operator is there to clear them or not."""

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
    assert "deleted 2 incident(s); the operator cleared their faults" in proc.stdout
    assert release.incident("one") is None
    assert release.incident("two") is None
    assert release.incident("other-release") is not None  # another release's incident stays
    assert release.faults() == BASELINE
    assert naming.DIGEST_ANNOTATION not in _stamp(release)


def test_cleanup_without_an_operator_restores_the_baseline(
    operator: Operator, release: Cluster, kubeconfig: Path
) -> None:
    release.apply(incident("one", FAULTS))
    release.apply(incident("two", ROLLOUT, delivery="rollout"))
    wait_for(lambda: release.faults() == expected(FAULTS, ROLLOUT), 10, "injected")
    wait_for(lambda: naming.DIGEST_ANNOTATION in _stamp(release), 10, "the rollout stamp")
    operator.process.send_signal(signal.SIGKILL)
    operator.stop()
    # An incident as an operator before level-based clearing left it: with its finalizer.
    legacy = incident("legacy", FAULTS)
    legacy["metadata"]["finalizers"] = [naming.FINALIZER]
    release.apply(legacy)

    proc = _cleanup(kubeconfig, release.namespace, timeout=1)
    assert "the operator did not clear the faults within 1s" in proc.stdout, proc.stdout
    assert "baseline restored on the ConfigMap (changed)" in proc.stdout
    assert "rollout stamp removed from 1 Deployment(s), finalizers removed from 1 incident(s)" in proc.stdout
    wait_for(lambda: all(release.incident(n) is None for n in ("one", "two", "legacy")), 10, "incidents gone")
    assert release.faults() == BASELINE
    cm = release.get("configmap", naming.faults_configmap_name("payflow"))
    assert cm is not None
    assert cm["metadata"]["annotations"][naming.SOURCES_ANNOTATION] == "{}"
    assert release.configmap_data()["APP_UNRELATED_KEY"] == "kept"
    assert naming.DIGEST_ANNOTATION not in _stamp(release)
