"""A throwaway `make demo` stack for the benchmarks: payflow-stack up --demo in a temp dir."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from payflow.devstack.cli import invoke


@dataclass(frozen=True)
class Demo:
    state: Path
    app_url: str
    env: dict[str, str]

    def kubectl(self, *args: str, input: str | None = None) -> str:
        proc = subprocess.run(
            ["kubectl", *args], env=self.env, input=input, capture_output=True, text=True, timeout=60
        )
        if proc.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)}: {proc.stderr}")
        return proc.stdout


@contextlib.contextmanager
def demo_stack(load_rate: float) -> Iterator[Demo]:
    with tempfile.TemporaryDirectory(prefix="payflow-bench-demo-") as tmp:
        state = Path(tmp) / "state"
        up = invoke(state, "up", "--demo", f"--load-rate={load_rate}")
        try:
            if up.returncode != 0:
                raise RuntimeError(f"demo failed to start:\n{up.stdout}\n{up.stderr}")
            out = subprocess.run(
                ["bash", "-c", f"source {state / 'env'} && env -0"], capture_output=True, check=True
            ).stdout.decode()
            env = {**os.environ, **dict(kv.split("=", 1) for kv in out.split("\0") if "=" in kv)}
            status = json.loads((state / "status.json").read_text())
            yield Demo(state, status["demo"]["app_url"], env)
        finally:
            invoke(state, "down")
