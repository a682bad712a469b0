"""Child processes that never outlive their owner.

Each child runs in a process group of its own (so a stop reaches everything it forked) and,
unless it must outlive its parent (``make up``), receives SIGKILL when the process that
started it dies, even by SIGKILL (``PR_SET_PDEATHSIG``). Every live child is also in a
registry that an ``atexit`` hook and :func:`install_signal_guard` drain.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)

_live: set[Process] = set()
_live_lock = threading.Lock()


class ProcessFailedError(RuntimeError):
    """A child exited, or did not become ready, before its deadline."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` now (the OS picks it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _preexec(parent_pid: int | None, cgroups: Sequence[str]) -> Callable[[], None] | None:
    """What the child does after fork, before exec: join ``cgroups`` (their ``cgroup.procs``
    files), and with ``parent_pid``, ask for SIGKILL when that parent dies."""
    if parent_pid is None and not cgroups:
        return None

    def preexec() -> None:  # runs in the child, after fork, after any uid change
        for procs in cgroups:
            with open(procs, "w") as f:
                f.write(str(os.getpid()))
        if parent_pid is not None:
            _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
            if os.getppid() != parent_pid:  # the parent died before prctl took effect
                os._exit(1)

    return preexec


@dataclass(eq=False)
class Process:
    """One child process: its command, its log, its process group."""

    name: str
    argv: Sequence[str]
    log_path: Path
    env: Mapping[str, str] | None = None
    cwd: Path | None = None
    user: str | None = None
    die_with_parent: bool = True
    # cgroup.procs files the child joins before it runs (the local node's cgroups).
    cgroups: Sequence[str] = ()
    # A pipe on its standard input, kept open by this process: the child sees EOF when we go.
    stdin_pipe: bool = False
    popen: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    started_at: float = 0.0

    def start(self) -> None:
        if self.running:
            return
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log: IO[bytes] = self.log_path.open("ab")
        try:
            self.popen = subprocess.Popen(
                list(self.argv),
                stdin=subprocess.PIPE if self.stdin_pipe else subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(self.env) if self.env is not None else None,
                cwd=self.cwd,
                start_new_session=True,
                user=self.user,
                group=self.user,
                extra_groups=[] if self.user else None,
                preexec_fn=_preexec(os.getpid() if self.die_with_parent else None, self.cgroups),
            )
        finally:
            log.close()
        self.started_at = time.monotonic()
        with _live_lock:
            _live.add(self)

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.popen.poll() if self.popen else None

    def log_tail(self, lines: int = 25) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def wait_ready(self, check: Callable[[], bool], timeout: float, interval: float = 0.05) -> float:
        """Poll ``check`` until it is true; the seconds it took. Fails early if the child exits."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.running:
                raise ProcessFailedError(
                    f"{self.name} exited with code {self.returncode} before it was ready; "
                    f"log {self.log_path}:\n{self.log_tail()}"
                )
            with contextlib.suppress(Exception):
                if check():
                    return time.monotonic() - self.started_at
            if time.monotonic() > deadline:
                raise ProcessFailedError(
                    f"{self.name} not ready after {timeout:.0f}s; log {self.log_path}:\n{self.log_tail()}"
                )
            time.sleep(interval)

    def send_signal(self, sig: int) -> None:
        if self.popen is not None and self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.popen.pid, sig)

    def stop(self, timeout: float = 10.0, sig: int = signal.SIGTERM) -> None:
        """Stop the whole process group: ``sig``, then SIGKILL after ``timeout`` seconds."""
        if self.popen is None:
            return
        pgid = self.popen.pid
        self.send_signal(sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=timeout)
        # The leader may be gone while children of its group remain; the group dies in any case.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=5)
        if self.popen.stdin is not None:
            with contextlib.suppress(OSError):
                self.popen.stdin.close()
        with _live_lock:
            _live.discard(self)


def stop_all_live() -> None:
    """Kill every child still registered (the backstop at exit or on a signal)."""
    with _live_lock:
        live = list(_live)
    for proc in live:
        proc.stop(timeout=3)


atexit.register(stop_all_live)

_guard_installed = False


def install_signal_guard() -> None:
    """Turn SIGTERM and SIGHUP into KeyboardInterrupt, so ``finally`` blocks and fixture
    finalizers run and stop the children, as they already do on Ctrl-C (SIGINT)."""
    global _guard_installed
    if _guard_installed or threading.current_thread() is not threading.main_thread():
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, handler)
    _guard_installed = True


def _proc(pid: int | str) -> tuple[str, str]:
    """A process's command line (arguments joined by spaces) and state letter, from /proc."""
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return cmdline, state


def pids_mentioning(marker: str) -> list[int]:
    """PIDs of live processes whose command line contains ``marker`` or whose working
    directory is below it (PostgreSQL's backends name no path, but work in their data
    directory): how the leak checks find what a stack left behind."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline, state = _proc(entry.name)
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if state != "Z" and (marker in cmdline or cwd == marker or cwd.startswith(marker.rstrip("/") + "/")):
            found.append(int(entry.name))
    return found


def describe_pids(pids: list[int]) -> str:
    """``pid (state) command line`` of each, for a message about processes left behind."""
    lines = []
    for pid in pids:
        try:
            cmdline, state = _proc(pid)
        except OSError:
            lines.append(f"{pid} (gone)")
            continue
        lines.append(f"{pid} ({state}) {cmdline.strip()[:200]}")
    return "; ".join(lines)
