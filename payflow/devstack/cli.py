"""``payflow-stack``: run the local stack in the background, like a tiny kubelet.

    payflow-stack up       start what is not running; write .payflow/env
    payflow-stack status   what runs, on which port, since when, how often restarted
    payflow-stack env      the export lines of .payflow/env
    payflow-stack down     stop everything `up` started and delete its data

``up`` starts a supervisor process, detached from the terminal, that owns every component:
it restarts one that dies (with a back-off, as the kubelet does) and stops them all on
SIGTERM. The components die with the supervisor even if it is killed with SIGKILL.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from payflow.devstack import tools
from payflow.devstack.process import install_signal_guard, pids_mentioning
from payflow.devstack.stack import ALL_COMPONENTS, PORTS, LocalStack, StackConfig, with_requirements

BACKOFF_START, BACKOFF_MAX = 1.0, 30.0
UP_TIMEOUT = 180.0


@dataclass(frozen=True)
class StateDir:
    """The files of one background stack, under ``.payflow/`` (git-ignored)."""

    root: Path

    @property
    def pid_file(self) -> Path:
        return self.root / "supervisor.pid"

    @property
    def status_file(self) -> Path:
        return self.root / "status.json"

    @property
    def env_file(self) -> Path:
        return self.root / "env"

    @property
    def log_file(self) -> Path:
        return self.root / "supervisor.log"

    @property
    def workdir(self) -> Path:
        return self.root / "stack"

    def supervisor_pid(self) -> int | None:
        """The supervisor's PID if it is alive (and really ours), else None."""
        try:
            pid = int(self.pid_file.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return None
        return pid if b"supervise" in cmdline and str(self.root).encode() in cmdline else None

    def read_status(self) -> dict[str, Any]:
        try:
            return dict(json.loads(self.status_file.read_text()))
        except (OSError, ValueError):
            return {}

    def write_status(self, status: dict[str, Any]) -> None:
        tmp = self.status_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(status, indent=2))
        tmp.replace(self.status_file)


def default_state_dir() -> Path:
    return Path(os.environ.get("PAYFLOW_STATE_DIR") or tools.REPO_ROOT / ".payflow")


def env_lines(stack: LocalStack) -> str:
    path = ":".join(str(d) for d in tools.bin_dirs())
    lines = [f"export {k}={shlex.quote(v)}" for k, v in stack.env().items()]
    if path:
        lines.append(f'export PATH={shlex.quote(path)}:"$PATH"')
    return "# written by `payflow-stack up`; use: source .payflow/env\n" + "\n".join(lines) + "\n"


# --- the supervisor ----------------------------------------------------------------------


def supervise(state: StateDir, components: tuple[str, ...]) -> int:
    install_signal_guard()
    state.root.mkdir(parents=True, exist_ok=True)
    state.pid_file.write_text(f"{os.getpid()}\n")
    if (state.workdir / "stack.json").exists():
        config = StackConfig.load(state.workdir)
    else:
        config = StackConfig(workdir=state.workdir, components=components)
    stack = LocalStack(config)
    status: dict[str, Any] = {"supervisor": os.getpid(), "phase": "starting", "components": {}}
    restarts = dict.fromkeys(config.components, 0)
    next_try: dict[str, float] = {}

    def publish(phase: str, error: str | None = None) -> None:
        status["phase"] = phase
        status["error"] = error
        for name in config.components:
            proc = stack.processes.get(name)
            status["components"][name] = {
                "state": "running" if stack.running(name) else ("backoff" if name in next_try else "stopped"),
                "pid": proc.pid if proc and proc.running else None,
                "ports": {k: config.ports[k] for k in PORTS[name]},
                "restarts": restarts[name],
                "ready_seconds": round(stack.timings.get(name, 0.0), 2),
                "log": str(stack.logs / f"{name}.log"),
            }
        state.write_status(status)

    try:
        t0 = time.monotonic()
        stack.start()
        status["ready_seconds"] = round(time.monotonic() - t0, 2)
        state.env_file.write_text(env_lines(stack))
        publish("ready")
        while True:
            changed = False
            for name in config.components:
                if stack.running(name):
                    continue
                now = time.monotonic()
                if name not in next_try:  # it just died: wait, then restart, like the kubelet
                    delay = min(BACKOFF_MAX, BACKOFF_START * 2 ** restarts[name])
                    next_try[name] = now + delay
                    print(f"{name} exited; restarting in {delay:.0f}s", flush=True)
                    changed = True
                elif now >= next_try[name]:
                    restarts[name] += 1
                    try:
                        stack.start_component(name)
                        del next_try[name]
                    except Exception as exc:  # it failed again: back off further
                        print(f"{name} failed to restart: {exc}", flush=True)
                        next_try[name] = now + min(BACKOFF_MAX, BACKOFF_START * 2 ** restarts[name])
                    changed = True
            if changed:
                publish("ready" if all(stack.running(n) for n in config.components) else "degraded")
            time.sleep(0.5)
    except KeyboardInterrupt:
        return 0
    except Exception as exc:
        publish("failed", str(exc))
        print(f"stack failed: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        stack.stop()
        if status["phase"] != "failed":
            publish("stopped")
        with contextlib.suppress(OSError):
            state.pid_file.unlink()


# --- the commands ------------------------------------------------------------------------


def cmd_up(state: StateDir, components: tuple[str, ...]) -> int:
    if pid := state.supervisor_pid():
        print(f"already running (supervisor pid {pid}); the supervisor restarts any part that stops")
        print_status(state)
        return 0
    try:  # fail fast, before anything starts, when a binary is missing
        for name in with_requirements(components):
            if name in ("etcd", "kube-apiserver", "kube-controller-manager"):
                tools.find(name)
            elif name == "postgres":
                tools.postgres_bindir()
            elif name == "redis":
                tools.redis_server()
    except (tools.ToolMissingError, ValueError) as exc:
        print(exc, file=sys.stderr)
        return 2
    state.root.mkdir(parents=True, exist_ok=True)
    state.status_file.unlink(missing_ok=True)
    t0 = time.monotonic()
    with state.log_file.open("ab") as log:
        subprocess.Popen(
            [
                sys.executable,
                "-P",  # no repo root on sys.path: its operator/ folder must not shadow the stdlib
                "-m",
                "payflow.devstack.cli",
                "--state-dir",
                str(state.root),
                "supervise",
                "--components",
                ",".join(components),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = t0 + UP_TIMEOUT
    while time.monotonic() < deadline:
        status = state.read_status()
        if status.get("phase") == "ready":
            print_status(state)
            print(
                f"\nstack ready in {time.monotonic() - t0:.1f}s. Next:\n"
                f"  source {os.path.relpath(state.env_file)} && kubectl get --raw /readyz"
            )
            return 0
        if status.get("phase") == "failed":
            print(f"stack failed to start: {status.get('error')}\nsee {state.log_file}", file=sys.stderr)
            cmd_down(state, quiet=True)
            return 1
        time.sleep(0.2)
    print(f"stack not ready after {UP_TIMEOUT:.0f}s; see {state.log_file}", file=sys.stderr)
    cmd_down(state, quiet=True)
    return 1


def cmd_down(state: StateDir, quiet: bool = False) -> int:
    pid = state.supervisor_pid()
    if pid:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and state.supervisor_pid():
            time.sleep(0.1)
        if state.supervisor_pid():
            os.kill(pid, signal.SIGKILL)  # its children die with it (PR_SET_PDEATHSIG)
    # Anything still running from this stack's directory (a crash left it behind) goes too.
    marker = str(state.workdir)
    for left in pids_mentioning(marker):
        with contextlib.suppress(ProcessLookupError):
            os.kill(left, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while pids_mentioning(marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    shutil.rmtree(state.workdir, ignore_errors=True)
    for f in (state.env_file, state.status_file, state.pid_file):
        f.unlink(missing_ok=True)
    if not quiet:
        print("stopped" if pid else "nothing was running")
    return 0


def print_status(state: StateDir) -> int:
    status = state.read_status()
    pid = state.supervisor_pid()
    if not pid or not status:
        print("not running (make up starts it)")
        return 3
    print(f"supervisor pid {pid}, phase {status.get('phase')}")
    print(f"{'COMPONENT':<26}{'STATE':<10}{'PID':>8}  {'PORTS':<30}{'RESTARTS':>8}  READY")
    for name, c in status.get("components", {}).items():
        ports = ",".join(f"{k}={v}" for k, v in c["ports"].items())
        print(
            f"{name:<26}{c['state']:<10}{c['pid'] or '-':>8}  {ports:<30}{c['restarts']:>8}  "
            f"{c['ready_seconds']:.2f}s"
        )
    return 0 if status.get("phase") == "ready" else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="payflow-stack", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--state-dir", type=Path, default=None, help="default: .payflow in the repo")
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name in ("up", "supervise"):
        p = sub.add_parser(name)
        p.add_argument(
            "--components",
            default=",".join(ALL_COMPONENTS),
            help=f"comma-separated subset of {','.join(ALL_COMPONENTS)}",
        )
    sub.add_parser("down")
    sub.add_parser("status")
    sub.add_parser("env")
    args = parser.parse_args(argv)
    state = StateDir((args.state_dir or default_state_dir()).resolve())
    if args.cmd in ("up", "supervise"):
        components = tuple(c for c in args.components.split(",") if c)
        return cmd_up(state, components) if args.cmd == "up" else supervise(state, components)
    if args.cmd == "down":
        return cmd_down(state)
    if args.cmd == "status":
        return print_status(state)
    if not state.env_file.exists():
        print("not running (make up starts it)", file=sys.stderr)
        return 3
    sys.stdout.write(state.env_file.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
