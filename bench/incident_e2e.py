"""From `kubectl apply` of an incident to its fault in force in the app, and from `kubectl
delete` to cleared, on the `make demo` stack (chart, operator and app as local processes,
the demo's load running).

    .venv/bin/python -m bench.incident_e2e [--incidents 50] [--rollouts 5]

For each incident: t0 just before `kubectl apply` runs; "in force" when the app's
/api/config shows the fault with this incident; then `kubectl delete` and "cleared" when
/api/config no longer shows it. /api/config is polled every 5 ms. Each incident has its own
latency value, so a stale answer can never pass for a fresh one. Goal: p95 <= 300 ms (live).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import httpx

from bench.demo_stack import Demo, demo_stack

INCIDENT = """
apiVersion: payflow.dev/v1alpha1
kind: PayFlowIncident
metadata: {{name: {name}, namespace: demo}}
spec:
  target: payflow
  delivery: {delivery}
  faults: {{latency: {{delayMs: {delay}}}}}
"""


def latency_of(client: httpx.Client) -> dict[str, Any] | None:
    """The latency fault as /api/config shows it (on or off); None while the app restarts."""
    try:
        return dict(client.get("/api/config").json()["faults"]["latency"])
    except (httpx.HTTPError, ValueError, KeyError):
        return None


def wait(
    client: httpx.Client, predicate: Callable[[dict[str, Any]], bool], timeout: float = 60.0
) -> dict[str, Any]:
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        fault = latency_of(client)
        if fault is not None and predicate(fault):
            return fault
        time.sleep(0.005)
    raise TimeoutError("the fault did not change in time")


def one(demo: Demo, client: httpx.Client, i: int, delivery: str) -> tuple[float, float]:
    """Seconds from apply to in force, and from delete to cleared.

    live: the running app switches through its ConfigMap watch. rollout: "in force" is a
    new app process that started with the fault in its environment (envFrom), and "cleared"
    is the rolled-back process that started without it."""
    name, delay = f"bench-{delivery}-{i}", 10 + i
    rollout = delivery == "rollout"
    t0 = time.perf_counter()
    demo.kubectl("apply", "-f", "-", input=INCIDENT.format(name=name, delivery=delivery, delay=delay))
    on = wait(
        client,
        lambda f: (
            f["active"]
            and f["params"]["delayMs"] == delay
            and any(x["incident"] == name for x in f["incidents"] or [])
            and (not rollout or f["source"] == "environment")
        ),
    )
    t1 = time.perf_counter()
    demo.kubectl("delete", "pfi", name, "-n", "demo", "--wait=false")
    wait(
        client,
        lambda f: (
            not f["active"] and (not rollout or (f["source"] == "environment" and f["since"] != on["since"]))
        ),
    )
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1


def report(label: str, xs: list[float]) -> str:
    ms = sorted(x * 1000 for x in xs)
    p95 = ms[max(0, round(0.95 * len(ms)) - 1)]
    return f"{label:<38}{statistics.median(ms):>9.0f}{p95:>9.0f}{ms[-1]:>9.0f}"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--incidents", type=int, default=50)
    parser.add_argument("--rollouts", type=int, default=5)
    parser.add_argument("--load-rate", type=float, default=10.0)
    args = parser.parse_args()
    with demo_stack(args.load_rate) as demo, httpx.Client(base_url=demo.app_url, timeout=5) as client:
        one(demo, client, 10_000, "live")  # warm-up: first connections, first reconcile; not counted
        live = [one(demo, client, i, "live") for i in range(args.incidents)]
        rollout = [one(demo, client, i, "rollout") for i in range(args.rollouts)]
    print(
        f"incident_e2e: {args.incidents} live + {args.rollouts} rollout incidents on the demo stack, "
        f"load {args.load_rate:g} req/s"
    )
    print(f"{'':<38}{'p50 ms':>9}{'p95 ms':>9}{'max ms':>9}")
    print(report("live: kubectl apply -> in force", [a for a, _ in live]))
    print(report("live: kubectl delete -> cleared", [b for _, b in live]))
    slow = sorted(((a, i) for i, (a, _) in enumerate(live)), reverse=True)[:3]
    print("slowest live applies: " + ", ".join(f"#{i} {a * 1000:.0f} ms" for a, i in slow))
    if rollout:
        print(report("rollout: kubectl apply -> in force", [a for a, _ in rollout]))
        print(report("rollout: kubectl delete -> cleared", [b for _, b in rollout]))
    p95 = sorted(a for a, _ in live)[max(0, round(0.95 * len(live)) - 1)] * 1000
    print(f"goal live p95 <= 300 ms: {'met' if p95 <= 300 else 'NOT met'} ({p95:.0f} ms)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
