"""Helpers shared by the tests: polling with a deadline instead of sleeping."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from payflow.devstack import tools

T = TypeVar("T")


def wait_for(probe: Callable[[], T | None], timeout: float, what: str, interval: float = 0.05) -> T:
    """Call ``probe`` until it returns something truthy; fail with ``what`` after ``timeout`` s.

    Exceptions from ``probe`` count as "not yet" and the last one is reported."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        try:
            value = probe()
            if value:
                return value
        except Exception as exc:
            last = exc
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last error: {last!r}")
        time.sleep(interval)


def kubectl_for(kubeconfig: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """The pinned kubectl against ``kubeconfig``, called as the session's ``kubectl`` fixture is
    (a completed process; ``check`` raises on failure): for a cluster of the e2e suite."""
    binary = str(tools.find("kubectl").path)
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}

    def run(*args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [binary, *args], env=env, capture_output=True, text=True, input=input, timeout=60
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
        return proc

    return run
