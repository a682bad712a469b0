"""Helpers of the app's integration tests: process CPU and memory as the kernel reports them."""

from __future__ import annotations

import os
import time

from tests.support import wait_for

_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (what a container's CPU graph shows)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def cpu_rate(pid: int, seconds: float) -> float:
    """Core-seconds per second used by ``pid`` over the next ``seconds``."""
    t0, c0 = time.monotonic(), cpu_seconds(pid)
    wait_for(lambda: time.monotonic() - t0 >= seconds, seconds + 5, f"{seconds}s of CPU measurement")
    return (cpu_seconds(pid) - c0) / (time.monotonic() - t0)
