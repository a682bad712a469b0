"""The operator killed with SIGKILL while incidents are active: one is deleted and one expires
while it is down. Within 10 s of its restart the ConfigMap holds the merge of the incidents
still active, and nothing is stuck. Incidents an earlier operator marked with its finalizer
lose it on sight."""

from __future__ import annotations

import signal
import time
from datetime import UTC, datetime

import pytest

from payflow import naming
from payflow.operator.durations import parse_time
from tests.integration.operator.conftest import BASELINE, Cluster, Operator, expected, incident
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

    release.delete(naming.PLURAL, "gone", wait=True)  # no finalizer: gone at once, operator or not
    assert release.incident("gone") is None
    wait_for(lambda: datetime.now(UTC) > expires_at, 10, "the short incident's time to run out")
    assert release.faults() == expected(KEEP, GONE, SHORT)  # nobody changed anything meanwhile

    restarted = time.monotonic()
    operator.start()
    wait_for(
        lambda: release.faults() == expected(KEEP) and release.phase("short") == "Expired",
        10,
        "the ConfigMap to equal the merge of the incidents still active",
    )
    assert time.monotonic() - restarted < 10
    assert release.phase("keep") == "Active"
    # The ConfigMap named the deleted incident: that is how the operator knew what to clear.
    cleared = wait_for(
        lambda: [e for e in release.events("gone") if e.get("reason") == "Cleared"], 10, "a Cleared event"
    )
    assert cleared[0]["message"] == "Deleted: errorRate cleared on payflow."
    short = release.incident("short")
    assert short is not None
    assert not short["metadata"].get("finalizers")
    release.delete(naming.PLURAL, "short", wait=True)
    assert release.faults() == expected(KEEP)  # an Expired incident held nothing


def test_the_last_incidents_deleted_while_down_are_cleared_on_return(
    operator: Operator, release: Cluster
) -> None:
    """No incident is left to resume: only the ConfigMap and the pod template, which still name
    the deleted incidents, tell the operator what to clear when it comes back."""
    release.apply(incident("live", KEEP))
    release.apply(incident("rolled", {"oom": {}}, delivery="rollout"))
    wait_for(lambda: release.faults() == expected(KEEP, {"oom": {}}), 10, "both merged")
    wait_for(lambda: naming.DIGEST_ANNOTATION in _stamp(release), 10, "the rollout stamp")
    operator.process.send_signal(signal.SIGKILL)
    wait_for(lambda: not operator.process.running, 10, "the operator to die")
    operator.stop()

    release.delete(naming.PLURAL, "live", wait=True)
    release.delete(naming.PLURAL, "rolled", wait=True)
    assert release.faults() == expected(KEEP, {"oom": {}})  # nobody cleared anything meanwhile

    restarted = time.monotonic()
    operator.start()
    wait_for(
        lambda: release.faults() == BASELINE and naming.DIGEST_ANNOTATION not in _stamp(release),
        10,
        "the baseline back and the pod template unstamped",
    )
    assert time.monotonic() - restarted < 10
    wait_for(
        lambda: all("Cleared" in release.event_reasons(n) for n in ("live", "rolled")), 10, "Cleared events"
    )


def _stamp(cluster: Cluster) -> dict[str, str]:
    body = cluster.get("deployment", "payflow-api")
    assert body is not None
    return dict(body["spec"]["template"]["metadata"].get("annotations") or {})


def test_the_finalizer_of_an_earlier_operator_is_removed(operator: Operator, release: Cluster) -> None:
    # As operators before level-based clearing left them: with `payflow.dev/clear-faults`.
    legacy = incident("legacy", KEEP)
    legacy["metadata"]["finalizers"] = [naming.FINALIZER, "example.com/someone-else"]
    release.apply(legacy)
    wait_for(lambda: release.phase("legacy") == "Active", 10, "Active")
    wait_for(
        lambda: release.incident("legacy")["metadata"].get("finalizers") == ["example.com/someone-else"],  # type: ignore[index]
        10,
        "our old finalizer removed, someone else's kept",
    )
    # Held by someone else's finalizer, it is being deleted: its faults are cleared all the same.
    release.delete(naming.PLURAL, "legacy")
    wait_for(lambda: release.faults() == expected(), 5, "the baseline back while it is still Terminating")
    assert release.incident("legacy") is not None
    release.kubectl(
        "patch",
        f"{naming.PLURAL}/legacy",
        "-n",
        release.namespace,
        "--type=merge",
        "-p",
        '{"metadata":{"finalizers":null}}',
    )
    wait_for(lambda: release.incident("legacy") is None, 10, "the incident gone")
