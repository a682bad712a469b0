"""An interrupted test run leaves no server behind, however it is interrupted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from payflow.devstack.process import pids_mentioning
from tests.support import wait_for

CHILD = Path(__file__).with_name("stack_child.py")
EXPECTED = {"etcd", "kube-apiserver", "kube-controller-manager", "postgres", "redis"}


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=lambda s: s.name)
def test_an_interrupted_run_leaves_no_process(tmp_path: Path, sig: signal.Signals) -> None:
    ready = tmp_path / "ready.json"
    base = tmp_path / "child"
    child = subprocess.Popen(
        [
            sys.executable,
            "-P",  # no repo root on sys.path: its operator/ folder must not shadow the stdlib
            "-m",
            "pytest",
            str(CHILD),
            "-p",
            "no:cacheprovider",
            "-o",
            "python_files=stack_child.py",
            f"--basetemp={base}",
            "-q",
            "--timeout=0",
        ],
        env={**os.environ, "PAYFLOW_CHILD_READY": str(ready)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:

        def child_ready() -> dict[str, int] | None:
            if child.poll() is not None:
                pytest.fail(f"the child exited early ({child.returncode}):\n{child.communicate()[0]}")
            return json.loads(ready.read_text()) if ready.exists() else None

        pids = wait_for(child_ready, timeout=120, what="the child's stack")
        assert set(pids) == EXPECTED
        assert sorted(pids_mentioning(str(base))), "the child's servers should run before the signal"

        child.send_signal(sig)
        out, _ = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()

    assert child.returncode != 0, out
    wait_for(lambda: not pids_mentioning(str(base)), timeout=15, what="every child server to be gone")

    def gone(pid: int) -> bool:
        try:  # a zombie has exited; only its parent has not reaped it yet
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
        except OSError:
            return True

    # A process killed mid-exit is in state D for a moment: wait for it, with a deadline.
    wait_for(lambda: all(gone(pid) for pid in pids.values()), timeout=15, what="every server pid to exit")
