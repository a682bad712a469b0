"""A workload crashes and comes back with a back-off, as a pod would under the kubelet."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from payflow.devstack.process import Process
from payflow.devstack.workloads import Workload
from tests.support import wait_for


def test_a_crashing_workload_is_restarted_with_a_growing_backoff(tmp_path: Path) -> None:
    starts = tmp_path / "starts"

    def build(restarts: int) -> Process:
        # Each "pod" records its restart count, then crashes like the panic fault does.
        code = f"open({str(starts)!r}, 'a').write('{restarts}\\n'); raise SystemExit(70)"
        return Process("crasher", [sys.executable, "-c", code], tmp_path / "crasher.log")

    w = Workload("crasher", build)
    w.start()
    events: list[str] = []

    def restarted_twice() -> bool:
        if event := w.tick(time.monotonic()):
            events.append(event)
        return w.restarts >= 2 and starts.exists() and len(starts.read_text().split()) >= 3

    wait_for(restarted_twice, timeout=20, what="two restarts")
    w.stop()
    assert starts.read_text().split()[:3] == ["0", "1", "2"]
    assert w.last_exit == 70
    assert events[0] == "crasher: exited with code 70; restarting in 1s"
    assert "crasher: exited with code 70; restarting in 2s" in events
