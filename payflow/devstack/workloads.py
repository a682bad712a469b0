"""The stack's parts, supervised the way the kubelet supervises containers.

A :class:`Workload` builds a fresh :class:`Process` at every start. When it exits it is started
again after a back-off that doubles with each consecutive crash (the kubelet's
CrashLoopBackOff, on a shorter scale), and its restart count only grows.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from payflow.devstack.process import Process

BACKOFF_BASE = 1.0  # seconds before the first restart
BACKOFF_CAP = 30.0  # the longest wait between restarts
STABLE_AFTER = 60.0  # a run this long resets the back-off (not the restart count)


def crash_backoff(consecutive_crashes: int, base: float = BACKOFF_BASE, cap: float = BACKOFF_CAP) -> float:
    """Seconds to wait before restarting after the ``consecutive_crashes``-th crash in a row."""
    if consecutive_crashes <= 0:
        return 0.0
    return float(min(cap, base * 2 ** (consecutive_crashes - 1)))


@dataclass
class Workload:
    """One supervised process: started, watched, restarted with a back-off, stopped."""

    name: str
    build: Callable[[int], Process]  # given the restart count, a fresh, unstarted process
    ready: Callable[[], bool] | None = None
    proc: Process | None = None
    restarts: int = 0
    consecutive_crashes: int = 0
    last_exit: int | None = None
    next_start: float | None = None
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.running

    def start(self) -> None:
        self.proc = self.build(self.restarts)
        self.proc.start()
        self.next_start = None

    def wait_ready(self, timeout: float) -> float:
        assert self.proc is not None
        return self.proc.wait_ready(self.ready or (lambda: True), timeout=timeout)

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is not None:
            self.proc.stop(timeout=timeout)

    def tick(self, now: float) -> str | None:
        """Advance the restart machine once; a line for the log when something happened."""
        if self.running:
            if self.proc and now - self.proc.started_at >= STABLE_AFTER:
                self.consecutive_crashes = 0
            return None
        if self.next_start is None:  # it just exited: note it and schedule the restart
            self.last_exit = self.proc.returncode if self.proc else None
            self.consecutive_crashes += 1
            delay = crash_backoff(self.consecutive_crashes)
            self.next_start = now + delay
            self.history.append({"exit": self.last_exit, "at": time.time()})
            return f"{self.name}: exited with code {self.last_exit}; restarting in {delay:.0f}s"
        if now >= self.next_start:
            self.restarts += 1
            self.start()
            return f"{self.name}: started again (restart {self.restarts})"
        return None

    def describe(self) -> dict[str, Any]:
        return {
            "state": "running" if self.running else ("backoff" if self.next_start else "stopped"),
            "pid": self.proc.pid if self.proc and self.proc.running else None,
            "restarts": self.restarts,
            "last_exit": self.last_exit,
            "log": str(self.proc.log_path) if self.proc else None,
        }
