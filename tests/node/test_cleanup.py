"""A node leaves nothing on the host, however its owner ends: stopped, SIGINT, SIGTERM or
SIGKILL. No process, mount, network namespace or cgroup of the stack is left, and the kernel
settings the kubelet changed are put back."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from payflow.devstack import hostcfg
from payflow.devstack.process import describe_pids, pids_mentioning
from tests.support import wait_for

CHILD = Path(__file__).with_name("node_child.py")


KUBELET_VALUES = {"vm/overcommit_memory": "1", "kernel/panic": "10", "kernel/panic_on_oops": "1"}


def holders_of(netns_inode: int) -> list[int]:
    """The live processes in a network namespace (it exists while one of them holds it)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.stat(entry / "ns" / "net").st_ino == netns_inode:
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.mark.slow
@pytest.mark.parametrize(
    "sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=lambda s: signal.Signals(s).name
)
def test_an_interrupted_node_leaves_nothing_behind(sig: signal.Signals) -> None:
    others_alive = any(hostcfg.guard_alive(p) for p in hostcfg.node_cgroups_on_host())
    sysctls_before = hostcfg.read_sysctls(hostcfg.KUBELET_SYSCTLS)
    base = Path(tempfile.mkdtemp(prefix="pfn-", dir="/tmp"))
    ready = base / "ready.json"
    child = subprocess.Popen(
        [sys.executable, "-P", str(CHILD), str(base / "stack"), str(ready)],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:

        def child_ready() -> dict[str, object] | None:
            if child.poll() is not None:
                pytest.fail(f"the child exited early ({child.returncode}):\n{child.communicate()[0]}")
            return json.loads(ready.read_text()) if ready.exists() else None

        info = wait_for(child_ready, timeout=300, interval=0.5, what="the child's node with a running pod")
        guard = int(str(info["guard"]))
        assert hostcfg.guard_alive(guard)
        netns = os.stat(f"/proc/{guard}/ns/net").st_ino
        assert netns != os.stat("/proc/self/ns/net").st_ino, "the node has a network namespace of its own"
        assert any(" overlay " in line for line in Path(f"/proc/{guard}/mounts").read_text().splitlines()), (
            "the pod's overlay mount exists in the node's mount namespace"
        )
        assert hostcfg.read_sysctls(hostcfg.KUBELET_SYSCTLS) == KUBELET_VALUES, "the kubelet's host settings"
        child.send_signal(sig)
        out, _ = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()

    wait_for(lambda: not hostcfg.guard_alive(guard), timeout=60, interval=0.2, what="the guard to finish")
    left = pids_mentioning(str(base))
    assert not left, f"processes left: {describe_pids(left)}\n{out}"
    for cgroup in info["cgroups"]:  # type: ignore[attr-defined]
        assert not Path(cgroup).exists(), f"cgroup {cgroup} left\n{out}"
    assert not hostcfg.leftovers(), hostcfg.leftovers()
    assert not holders_of(netns), f"the node's network namespace is still held by {holders_of(netns)}"
    if not others_alive:
        assert hostcfg.read_sysctls(hostcfg.KUBELET_SYSCTLS) == sysctls_before, "the sysctls were restored"
    subprocess.run(["rm", "-rf", str(base)], check=False)
