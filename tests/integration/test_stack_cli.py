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
from payflow.devstack.process import pids_mentioning
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
    assert not pids_mentioning(str(state_dir))
    assert invoke(state_dir, "status").returncode == 3
