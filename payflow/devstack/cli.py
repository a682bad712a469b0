"""``payflow-stack``: run the local stack in the background.

    payflow-stack up          start what is not running; write .payflow/env
    payflow-stack up --demo   the local node, the images, the chart with real pods (make demo)
    payflow-stack status      what runs, on which port, since when, how often restarted
    payflow-stack env         the export lines of .payflow/env
    payflow-stack down        stop everything `up` started and delete its data
    payflow-stack images      build the node's images that are stale (see payflow.devstack.images)

``up`` starts a supervisor process, detached from the terminal, that owns every component:
it restarts one that dies (with a back-off, as the kubelet does) and stops them all on
SIGTERM. The components die with the supervisor even if it is killed with SIGKILL, and the
node's guard then takes down the node (its pods, mounts, cgroups and namespaces).
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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from payflow.devstack import hostcfg, preflight, tools
from payflow.devstack.nodedemo import NodeDemo, NodeDemoConfig
from payflow.devstack.process import describe_pids, install_signal_guard, pids_mentioning
from payflow.devstack.stack import (
    ALL_COMPONENTS,
    NODE_COMPONENTS,
    PORTS,
    LocalStack,
    StackConfig,
    with_requirements,
)
from payflow.devstack.workloads import Workload

LOAD_RATE = 5.0  # the chart's default load generator rate (requests/s)

UP_TIMEOUT = 180.0
DEMO_UP_TIMEOUT = 1800.0  # the first `make demo` builds five images
DOWN_TIMEOUT = 30.0  # for the supervisor to stop everything; then SIGKILL


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
        except (OSError, ValueError):
            return None
        return pid if self.is_supervisor(pid) else None

    def is_supervisor(self, pid: int) -> bool:
        """Whether ``pid`` is this directory's supervisor and has not exited yet. The pid file
        goes first, while the supervisor still winds down: ``down`` waits on the process."""
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()  # empty once it has exited
        except OSError:
            return False
        return b"supervise" in cmdline and str(self.root).encode() in cmdline

    def read_status(self) -> dict[str, Any]:
        try:
            return dict(json.loads(self.status_file.read_text()))
        except (OSError, ValueError):
            return {}

    def write_status(self, status: dict[str, Any]) -> None:
        tmp = self.status_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(status, indent=2))
        tmp.replace(self.status_file)


def invoke(state_dir: Path, *args: str, timeout: float = 300.0) -> subprocess.CompletedProcess[str]:
    """Run ``payflow-stack --state-dir STATE_DIR ARGS...`` as a user would (tests, benchmarks)."""
    return subprocess.run(
        [sys.executable, "-P", "-m", "payflow.devstack.cli", "--state-dir", str(state_dir), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def default_state_dir() -> Path:
    return Path(os.environ.get("PAYFLOW_STATE_DIR") or tools.REPO_ROOT / ".payflow")


def env_lines(stack: LocalStack, extra: dict[str, str] | None = None) -> str:
    path = ":".join(str(d) for d in tools.bin_dirs())
    lines = [f"export {k}={shlex.quote(v)}" for k, v in {**stack.env(), **(extra or {})}.items()]
    if path:
        lines.append(f'export PATH={shlex.quote(path)}:"$PATH"')
    return "# written by `payflow-stack up`; use: source .payflow/env\n" + "\n".join(lines) + "\n"


# --- the supervisor ----------------------------------------------------------------------


class ComponentWorkload(Workload):
    """A part of the stack under the same restart rules as a workload: it restarts with the
    same port and data (``LocalStack.start_component``), and is ready when it returns."""

    def __init__(self, stack: LocalStack, name: str) -> None:
        super().__init__(
            name=name, build=lambda _restarts: stack.processes[name], proc=stack.processes.get(name)
        )
        self.stack = stack

    def start(self) -> None:
        try:
            self.stack.start_component(self.name)
        finally:
            self.proc = self.stack.processes.get(self.name)
            self.next_start = None


def _alive(pid: int | None) -> bool:
    return pid is None or Path(f"/proc/{pid}").exists()


def supervise(
    state: StateDir,
    components: tuple[str, ...],
    demo: bool = False,
    load_rate: float = LOAD_RATE,
    owner: int | None = None,
) -> int:
    install_signal_guard()
    state.root.mkdir(parents=True, exist_ok=True)
    state.pid_file.write_text(f"{os.getpid()}\n")
    if (state.workdir / "stack.json").exists():
        config = StackConfig.load(state.workdir)
    else:
        config = StackConfig(workdir=state.workdir, components=NODE_COMPONENTS if demo else components)
    stack = LocalStack(config)
    t0 = time.monotonic()
    status: dict[str, Any] = {"supervisor": os.getpid(), "phase": "starting", "steps": [], "components": {}}
    parts: list[ComponentWorkload] = []
    workloads: list[Workload] = []

    def publish(phase: str, error: str | None = None) -> None:
        status["phase"] = phase
        status["error"] = error
        for part in parts:
            status["components"][part.name] = {
                **part.describe(),
                "ports": {k: config.ports[k] for k in PORTS.get(part.name, ()) if k in config.ports}
                if not config.node or part.name == "portal"
                else {},
                "ready_seconds": round(stack.timings.get(part.name, 0.0), 2),
            }
        status["workloads"] = {w.name: w.describe() for w in workloads}
        state.write_status(status)

    def step(message: str) -> None:
        status["steps"].append({"seconds": round(time.monotonic() - t0, 1), "step": message})
        print(f"[{time.monotonic() - t0:5.1f}s] {message}", flush=True)
        publish("starting")

    try:
        stack.start()
        parts.extend(ComponentWorkload(stack, name) for name in config.components)
        step(f"local stack ready: {', '.join(config.components)}")
        state.env_file.write_text(env_lines(stack))
        if demo:
            sets = {} if load_rate == LOAD_RATE else _load_values(load_rate)
            the_demo = NodeDemo(stack, NodeDemoConfig(set_values=sets))
            the_demo.install(step)
            assert the_demo.app_url is not None
            status["demo"] = {
                "app_url": the_demo.app_url,
                "namespace": the_demo.config.namespace,
                "release": the_demo.config.release,
                "pods": the_demo.pod_names(),
                "images": the_demo.images,
            }
            state.env_file.write_text(env_lines(stack, {"PAYFLOW_APP_URL": the_demo.app_url}))
        status["ready_seconds"] = round(time.monotonic() - t0, 2)
        publish("ready")
        while True:
            now = time.monotonic()
            if not _alive(owner):
                print(f"the owner (pid {owner}) is gone: stopping", flush=True)
                return 0
            if config.node and not stack.running("netns"):
                raise RuntimeError("the node's guard exited: the node is gone (see logs/netns.log)")
            events = [e for w in (*parts, *workloads) if w.name != "netns" and (e := _tick(w, now))]
            for event in events:
                print(event, flush=True)
            if events:
                healthy = all(w.running for w in (*parts, *workloads))
                publish("ready" if healthy else "degraded")
            time.sleep(0.5)
    except KeyboardInterrupt:
        return 0
    except Exception as exc:
        publish("failed", str(exc))
        print(f"stack failed: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        for w in reversed(workloads):
            w.stop()
        stack.stop()
        if status["phase"] != "failed":
            publish("stopped")
        with contextlib.suppress(OSError):
            state.pid_file.unlink()


def _load_values(rate: float) -> dict[str, str]:
    """helm --set values for a load generator at ``rate`` requests/s (none at 0)."""
    return {"loadgen.enabled": "false"} if rate == 0 else {"loadgen.rate": f"{rate:g}"}


def _tick(workload: Workload, now: float) -> str | None:
    try:
        return workload.tick(now)
    except Exception as exc:  # it failed to start again: the back-off grows, the loop goes on
        workload.next_start = None
        return f"{workload.name}: failed to start: {exc}"


# --- the commands ------------------------------------------------------------------------


def cmd_up(
    state: StateDir,
    components: tuple[str, ...],
    demo: bool = False,
    load_rate: float = LOAD_RATE,
    owner: int | None = None,
) -> int:
    if pid := state.supervisor_pid():
        status = state.read_status()
        if demo and not status.get("demo"):
            print("the local stack runs without the demo: `make down`, then `make demo`", file=sys.stderr)
            return 1
        print(f"already running (supervisor pid {pid}); the supervisor restarts any part that stops")
        print_status(state)
        if status.get("phase") == "ready":
            print(next_steps(state, status, float(status.get("ready_seconds") or 0.0)))
        return 0
    if demo:  # before anything is built: can this machine run the node at all?
        if problems := preflight.check():
            print(preflight.report(problems), file=sys.stderr)
            return 2
        components = NODE_COMPONENTS
    try:  # fail fast, before anything starts, when a binary is missing
        for name in with_requirements(components):
            if name in tools.GO_BUILT:
                tools.find(name)
            elif name == "postgres":
                tools.postgres_bindir()
            elif name == "redis":
                tools.redis_server()
        if demo:
            tools.find("helm")
            tools.find("kubectl")
    except (tools.ToolMissingError, ValueError) as exc:
        print(exc, file=sys.stderr)
        return 2
    state.root.mkdir(parents=True, exist_ok=True)
    state.status_file.unlink(missing_ok=True)
    t0 = time.monotonic()
    argv = [
        sys.executable,
        "-P",  # no repo root on sys.path: its operator/ folder must not shadow the stdlib
        "-m",
        "payflow.devstack.cli",
        "--state-dir",
        str(state.root),
        "supervise",
        "--components",
        ",".join(components),
        *([f"--owner={owner}"] if owner else []),
    ]
    with state.log_file.open("ab") as log:
        subprocess.Popen(
            [*argv, "--demo", f"--load-rate={load_rate}"] if demo else argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    shown = 0
    deadline = t0 + (DEMO_UP_TIMEOUT if demo else UP_TIMEOUT)
    while time.monotonic() < deadline:
        status = state.read_status()
        steps = status.get("steps") or []
        for s in steps[shown:]:
            print(f"[{s['seconds']:5.1f}s] {s['step']}", flush=True)
        shown = len(steps)
        if status.get("phase") == "ready":
            print()
            print_status(state)
            print(next_steps(state, status, time.monotonic() - t0))
            return 0
        if status.get("phase") == "failed":
            print(f"stack failed to start: {status.get('error')}\nsee {state.log_file}", file=sys.stderr)
            cmd_down(state, quiet=True)
            return 1
        time.sleep(0.2)
    print(f"stack not ready in time; see {state.log_file}", file=sys.stderr)
    cmd_down(state, quiet=True)
    return 1


def next_steps(state: StateDir, status: dict[str, Any], seconds: float) -> str:
    env = os.path.relpath(state.env_file)
    demo = status.get("demo")
    if not demo:
        return f"\nstack ready in {seconds:.1f}s. Next:\n  source {env} && kubectl get --raw /readyz\n"
    url, ns, release = demo["app_url"], demo["namespace"], demo.get("release", "payflow")
    steps = "".join(f"  [{s['seconds']:5.1f}s] {s['step']}\n" for s in status.get("steps") or [])
    return (
        f"\nPayFlow demo ready in {seconds:.1f}s, on a real node:\n{steps}\n"
        f"  dashboard  {url}/\n"
        f"  API        {url}/api/stats   (docs: {url}/docs)\n\n"
        f"  source {env}\n"
        f"  kubectl get pods -n {ns} -w      # the app (2 replicas), operator, PostgreSQL, Redis, load\n"
        f"  kubectl port-forward -n {ns} svc/{release} 8080:80   # http://localhost:8080: the dashboard\n\n"
        "Incidents:\n"
        "  kubectl apply -f examples/incidents/latency.yaml\n"
        f"  kubectl get pfi -n {ns}                    # Active, with its expiry\n"
        f"  curl -s {url}/api/config                  # the latency in force, and which incident\n"
        "  kubectl delete -f examples/incidents/latency.yaml\n"
        "  kubectl apply -f examples/incidents/caching-incident.yaml   # a bad deploy: OOMKilled pods\n\n"
        "The seed's caching incident and its rollback:\n"
        f"  helm upgrade {release} ./helm/payflow -n {ns} -f ./helm/payflow/values-buggy.yaml\n"
        f"  helm upgrade {release} ./helm/payflow -n {ns} -f ./helm/payflow/values-lkg.yaml\n\n"
        "  make status   # the node's parts, their restarts and last exits; the pods\n"
        "  make down     # stop everything\n"
    )


def cmd_down(state: StateDir, quiet: bool = False, timeout: float = DOWN_TIMEOUT) -> int:
    pid = state.supervisor_pid()
    if pid:
        # It stops every part (each asked, then SIGKILLed after its timeout) before it exits.
        os.kill(pid, signal.SIGTERM)
        if not _poll(lambda: not state.is_supervisor(pid), timeout):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)  # its children die with it (PR_SET_PDEATHSIG)
            _poll(lambda: not state.is_supervisor(pid), 10)
    # Anything still running from this stack's directory (a crash left it behind) goes too,
    # including what a dying part forked while it was being stopped.
    marker = str(state.workdir)

    def swept() -> bool:
        left = pids_mentioning(marker)
        for p in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)
        return not left

    if not _poll(swept, 10):
        left = describe_pids(pids_mentioning(marker))
        print(f"processes still running after down: {left}", file=sys.stderr)
        return 1
    for line in hostcfg.sweep_stale():  # a node whose guard was killed: its cgroups, sysctls
        print(f"swept: {line}", file=sys.stderr)
    if left_behind := hostcfg.leftovers():
        print("left on the host after down:\n  " + "\n  ".join(left_behind), file=sys.stderr)
        return 1
    shutil.rmtree(state.workdir, ignore_errors=True)
    for f in (state.env_file, state.status_file, state.pid_file):
        f.unlink(missing_ok=True)
    if not quiet:
        print("stopped" if pid else "nothing was running")
    return 0


def _poll(done: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Whether ``done()`` became true within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


def print_status(state: StateDir) -> int:
    status = state.read_status()
    pid = state.supervisor_pid()
    if not pid or not status:
        print("not running (make up starts it)")
        return 3
    print(f"supervisor pid {pid}, phase {status.get('phase')}")
    print(f"{'PART':<26}{'STATE':<10}{'PID':>8}  {'RESTARTS':>8}  {'LAST EXIT':>9}  DETAIL")
    for name, c in status.get("components", {}).items():
        ports = ",".join(f"{k}={v}" for k, v in c["ports"].items())
        print(f"{name:<26}{c['state']:<10}{c['pid'] or '-':>8}  {c['restarts']:>8}  {_exit(c):>9}  {ports}")
    for name, w in (status.get("workloads") or {}).items():
        print(
            f"{name:<26}{w['state']:<10}{w['pid'] or '-':>8}  {w['restarts']:>8}  {_exit(w):>9}  {w['log']}"
        )
    if demo := status.get("demo"):
        print(f"\ndemo: namespace {demo['namespace']}, app {demo['app_url']}")
        print(
            "images: built here and offered to the node's containerd under the chart's default names,\n"
            "as an air-gapped mirror would (nothing is pulled):"
        )
        for image in demo.get("images") or []:
            print(f"  {image}")
    return 0 if status.get("phase") == "ready" else 1


def _exit(entry: dict[str, Any]) -> str:
    code = entry.get("last_exit")
    return "-" if code is None else str(code)


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
        p.add_argument(
            "--demo",
            action="store_true",
            help="the local node, the images, the chart with real pods and load",
        )
        p.add_argument(
            "--owner", type=int, default=None, help="stop everything when this process is gone (tests)"
        )
        p.add_argument(
            "--load-rate",
            type=float,
            default=LOAD_RATE,
            help=f"demo load, requests/s (default {LOAD_RATE:g}; 0: none)",
        )
    down = sub.add_parser("down")
    down.add_argument(
        "--timeout",
        type=float,
        default=DOWN_TIMEOUT,
        help=f"seconds the supervisor gets to stop everything before SIGKILL (default {DOWN_TIMEOUT:g})",
    )
    sub.add_parser("status")
    sub.add_parser("env")
    imgs = sub.add_parser("images", help="build the node's images that are stale (keyed by their inputs)")
    imgs.add_argument("names", nargs="*", metavar="NAME", help="only these images (and their base)")
    imgs.add_argument("--force", action="store_true", help="build them even if cached")
    imgs.add_argument("--plan", action="store_true", help="say what would be built and why; build nothing")
    args = parser.parse_args(argv)
    if args.cmd == "images":
        from payflow.devstack import images

        return images.main(args.names, force=args.force, plan_only=args.plan)
    state = StateDir((args.state_dir or default_state_dir()).resolve())
    if args.cmd in ("up", "supervise"):
        components = tuple(c for c in args.components.split(",") if c)
        if args.load_rate < 0:
            parser.error("--load-rate must be 0 or more")
        if args.cmd == "up":
            return cmd_up(state, components, demo=args.demo, load_rate=args.load_rate, owner=args.owner)
        return supervise(state, components, demo=args.demo, load_rate=args.load_rate, owner=args.owner)
    if args.cmd == "down":
        return cmd_down(state, timeout=args.timeout)
    if args.cmd == "status":
        return print_status(state)
    if not state.env_file.exists():
        print("not running (make up starts it)", file=sys.stderr)
        return 3
    sys.stdout.write(state.env_file.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
