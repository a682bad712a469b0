"""The demo as `make demo` runs it: payflow-stack up --demo, in a throwaway state directory."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from payflow.devstack.cli import invoke
from payflow.devstack.process import describe_pids, pids_mentioning


@dataclass
class DemoStack:
    state: Path
    up_output: str

    @property
    def status(self) -> dict[str, Any]:
        return dict(json.loads((self.state / "status.json").read_text()))

    @property
    def app_url(self) -> str:
        return str(self.status["demo"]["app_url"])

    @property
    def env(self) -> dict[str, str]:
        """The variables of .payflow/env, as `source` would set them."""
        out = subprocess.run(
            ["bash", "-c", f"source {self.state / 'env'} && env -0"],
            capture_output=True,
            check=True,
            timeout=10,
        ).stdout
        return dict(line.split("=", 1) for line in out.decode().split("\0") if "=" in line)

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> str:
        proc = subprocess.run(
            ["kubectl", *args], env=self.env, capture_output=True, text=True, input=input, timeout=60
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)}: {proc.stderr}")
        return proc.stdout

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.app_url + path, timeout=5) as resp:  # noqa: S310 (loopback)
            return json.load(resp)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoStack]:
    state = tmp_path_factory.mktemp("demo") / "state"
    up = invoke(state, "up", "--demo")
    try:
        assert up.returncode == 0, up.stdout + up.stderr + (state / "supervisor.log").read_text()
        yield DemoStack(state, up.stdout)
    finally:
        down = invoke(state, "down")
        assert down.returncode == 0, down.stderr
        left = pids_mentioning(str(state))
        assert not left, f"processes left after down: {describe_pids(left)}"
        assert os.path.exists(state / "supervisor.log")
