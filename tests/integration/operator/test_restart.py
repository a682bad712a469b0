"""The operator killed with SIGKILL while incidents are active: one is deleted and one expires
while it is down. Within 10 s of its restart the ConfigMap holds the merge of the incidents
still active, and nothing is stuck."""

from __future__ import annotations

import signal
import time
from datetime import UTC, datetime

import pytest

from payflow import naming
from payflow.operator.durations import parse_time
from tests.integration.operator.conftest import Cluster, Operator, expected, incident
from tests.support import wait_for

KEEP = {"latency": {"delayMs": 250}}
GONE = {"errorRate": {"ratio": 0.2}}
SHORT = {"cpuBurn": {"cores": 0.5}}


@pytest.mark.slow
def test_sigkill_delete_and_expiry_while_down(operator: Operator, release: Cluster) -> None:
    release.apply(incident("keep", KEEP))
    release.apply(incident("gone", GONE))
    release.apply(incident("short", SHORT, duration="4s"))
    wait_for(lambda: release.faults() == expected(KEEP, GONE, SHORT), 10, "all three merged")
    expires_at = parse_time(release.incident("short")["status"]["expiresAt"])  # type: ignore[index]
    assert expires_at is not None

    operator.process.send_signal(signal.SIGKILL)
    wait_for(lambda: not operator.process.running, 10, "the operator to die")
    operator.stop()

    release.delete(naming.PLURAL, "gone")  # stays Terminating: the finalizer holds it
    assert release.incident("gone") is not None
    wait_for(lambda: datetime.now(UTC) > expires_at, 10, "the short incident's time to run out")
    assert release.faults() == expected(KEEP, GONE, SHORT)  # nobody changed anything meanwhile

    restarted = time.monotonic()
    operator.start()
    wait_for(
        lambda: (
            release.faults() == expected(KEEP)
            and release.incident("gone") is None
            and release.phase("short") == "Expired"
        ),
        10,
        "the ConfigMap to equal the merge of the incidents still active",
    )
    assert time.monotonic() - restarted < 10
    assert release.phase("keep") == "Active"
    short = release.incident("short")
    assert short is not None
    assert naming.FINALIZER in short["metadata"]["finalizers"]  # still ours until deleted
    release.delete(naming.PLURAL, "short", wait=True)
    assert release.faults() == expected(KEEP)
