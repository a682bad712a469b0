"""On a machine that cannot run the node, `make demo` says what is missing and what still
works, before anything is built or started."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from payflow.devstack import preflight

STACK = [sys.executable, "-P", "-m", "payflow.devstack.cli"]


def up_demo(tmp_path: Path, drop: str) -> subprocess.CompletedProcess[str]:
    """`payflow-stack up --demo` run by root without the capabilities in ``drop``."""
    command = shlex.join([*STACK, "--state-dir", str(tmp_path / "state"), "up", "--demo"])
    return subprocess.run(
        ["capsh", f"--drop={drop}", "--", "-c", f"exec {command}"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
    )


def test_this_machine_passes_the_preflight() -> None:
    assert preflight.check() == []


def test_without_the_capabilities_it_names_them_and_what_still_works(tmp_path: Path) -> None:
    # The same root user without CAP_SYS_ADMIN and CAP_NET_ADMIN, as in an unprivileged container.
    proc = up_demo(tmp_path, "cap_sys_admin,cap_net_admin")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    err = proc.stderr
    assert "this machine cannot run the local node" in err
    assert "missing capabilities: CAP_NET_ADMIN, CAP_SYS_ADMIN" in err
    assert "cannot create network and mount namespaces" in err
    assert "Still works without it: `make up`" in err
    assert not (tmp_path / "state").exists(), "nothing was built or started"


def test_without_root_it_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    # The venv's interpreter lives below /root, so another user cannot even start it here;
    # the check itself reads the effective uid.
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    problem = preflight.check_root()
    assert problem is not None
    assert problem.what == "not root"


def test_the_report_names_every_problem_with_its_fix() -> None:
    problems = [preflight.Problem("no overlayfs in the kernel", "load the overlay module")]
    text = preflight.report(problems)
    assert "  - no overlayfs in the kernel: load the overlay module" in text
    assert "PAYFLOW_E2E_KUBECONFIG" in text
