"""`make up` / `make down` as a user runs them: payflow-stack with its own state directory."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from payflow.devstack.cli import invoke
from payflow.devstack.process import describe_pids, pids_mentioning
from tests.support import wait_for


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    state = tmp_path / "state"
    yield state
    invoke(state, "down")  # whatever the test did, nothing stays behind


@pytest.mark.slow
def test_up_env_readyz_restart_and_down(state_dir: Path) -> None:
    up = invoke(state_dir, "up")
    assert up.returncode == 0, up.stdout + up.stderr
    assert "stack ready in" in up.stdout

    # `source .payflow/env && kubectl get --raw /readyz` prints ok.
    shell = subprocess.run(
        [
            "bash",
            "-c",
            f"source {state_dir / 'env'} && kubectl get --raw /readyz && echo"
            " && psql -tAc 'select 42' \"$DATABASE_URL\"",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if k != "KUBECONFIG"},
    )
    assert shell.returncode == 0, shell.stderr
    assert shell.stdout.split() == ["ok", "42"]

    # Run again: nothing new starts.
    again = invoke(state_dir, "up")
    assert again.returncode == 0
    assert "already running" in again.stdout

    # A component that dies is restarted by the supervisor, like the kubelet would.
    status = json.loads((state_dir / "status.json").read_text())
    redis_pid = status["components"]["redis"]["pid"]
    os.kill(redis_pid, signal.SIGKILL)

    def restarted() -> bool:
        c: dict[str, Any] = json.loads((state_dir / "status.json").read_text())["components"]["redis"]
        return bool(c["restarts"] == 1 and c["state"] == "running" and c["pid"] != redis_pid)

    wait_for(restarted, timeout=20, what="redis restarted by the supervisor")
    listing = invoke(state_dir, "status")
    assert listing.returncode == 0
    assert "redis" in listing.stdout

    down = invoke(state_dir, "down")
    assert down.returncode == 0
    assert down.stdout.strip() == "stopped"
    left = pids_mentioning(str(state_dir))
    assert not left, f"processes left after down: {describe_pids(left)}"
    assert invoke(state_dir, "status").returncode == 3


def test_down_returns_only_after_the_supervisor_has_exited(state_dir: Path) -> None:
    """The supervisor removes its pid file before it exits (the interpreter still winds down
    after that); `down` must wait for the process, not the file. This stand-in, which names
    itself like the real one, removes its pid file on SIGTERM and then hangs (it reads a pipe
    nobody writes to): `down` must outwait it and SIGKILL it, and leave nothing behind."""
    state_dir.mkdir()
    pid_file = state_dir / "supervisor.pid"
    hanging = (
        "import os, signal, sys\n"
        "def stop(*_):\n"
        f"    os.unlink({str(pid_file)!r})\n"
        "    sys.stdin.read()  # a wind-down that never ends\n"
        "signal.signal(signal.SIGTERM, stop)\n"
        f"open({str(pid_file)!r}, 'w').write(str(os.getpid()))\n"
        "while True:\n"
        "    signal.pause()\n"
    )
    supervisor = subprocess.Popen(
        ["python3", "-c", hanging, "--state-dir", str(state_dir), "supervise"],
        stdin=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        wait_for(pid_file.exists, timeout=10, what="the stand-in supervisor's pid file")
        down = invoke(state_dir, "down", "--timeout", "2")
        assert down.returncode == 0, down.stderr
        assert down.stdout.strip() == "stopped"
        left = pids_mentioning(str(state_dir))  # the stand-in, once dead, is a zombie: not listed
        assert not left, f"down returned while the supervisor runs: {describe_pids(left)}"
        assert supervisor.wait(timeout=5) == -signal.SIGKILL  # outwaited, then killed
    finally:
        supervisor.kill()
        supervisor.wait()
