"""Does the load generator hold its rate? Against the app of the `make demo` stack.

    .venv/bin/python -m bench.loadgen [--duration 60] [--ramp 100,200,400,800,1600] [--step 10]

First 50 requests/s for 60 s (the issue's check: the rate achieved within 5 %), then a ramp
of higher rates, 10 s each, up to the first it cannot hold. A rate is *held* when the arrivals
sent reach 95 % of it on schedule, none is dropped, and 99 % of the requests succeed. The
generator runs in this process with the default request mix, against the demo's app URL: the
host's loopback forward into the node, the app Service, its 2 pods (the chart's own load
generator is off: `--load-rate=0`). The pods, PostgreSQL, Redis and the node share the
machine's 2 cores with it, so the highest rate says what this machine sustains end to end.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
from typing import Any

from bench.demo_stack import demo_stack
from payflow.loadgen.runner import LoadConfig, LoadGenerator


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def run(url: str, rate: float, duration: float) -> dict[str, Any]:
    cpu0 = cpu_seconds()
    summary = asyncio.run(LoadGenerator(LoadConfig(target=url, rate=rate, duration=duration, seed=1)).run())
    summary["generator_cpu"] = (cpu_seconds() - cpu0) / summary["elapsed_s"]
    sent = summary["sent"]
    summary["held"] = (
        summary["rate_per_s"] >= 0.95 * rate
        and summary["dropped"] == 0
        and summary["succeeded"] >= 0.99 * sent
    )
    return summary


def row(rate: float, s: dict[str, Any]) -> str:
    lat = s["latency_ms"]
    ok = 100 * s["succeeded"] / max(1, s["sent"])
    verdict = "held" if s["held"] else "NOT held"
    return (
        f"{rate:>7.0f}{s['rate_per_s']:>10.1f}{100 * s['rate_per_s'] / rate:>8.1f}%{ok:>8.1f}%"
        f"{s['dropped']:>8}{lat['p50']:>8}{lat['p95']:>8}{lat['p99']:>8}{s['generator_cpu']:>8.2f}  {verdict}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--ramp", default="100,200,400,800,1600")
    parser.add_argument("--step", type=float, default=10.0, help="seconds at each ramp rate")
    args = parser.parse_args()
    header = (
        f"{'target':>7}{'sent/s':>10}{'of tgt':>9}{'ok':>9}{'dropped':>8}"
        f"{'p50 ms':>8}{'p95 ms':>8}{'p99 ms':>8}{'gen cpu':>8}"
    )
    with demo_stack(load_rate=0) as demo:
        print(f"loadgen: open-loop Poisson arrivals, default mix, against the demo app at {demo.app_url}")
        print(header)
        main_run = run(demo.app_url, args.rate, args.duration)
        print(row(args.rate, main_run) + f"   ({args.duration:g} s)")
        highest = args.rate if main_run["held"] else 0.0
        for rate in (float(r) for r in args.ramp.split(",") if r):
            s = run(demo.app_url, rate, args.step)
            print(row(rate, s) + f"   ({args.step:g} s)")
            if not s["held"]:
                break
            highest = rate
    within = abs(main_run["rate_per_s"] - args.rate) / args.rate * 100
    print(
        f"{args.rate:g} req/s for {args.duration:g} s: achieved {main_run['rate_per_s']:.1f} req/s "
        f"({within:.1f} % off; goal within 5 %: {'met' if within <= 5 else 'NOT met'})"
    )
    print(
        f"highest rate held on this machine: {highest:g} req/s (gen cpu = generator core-seconds per second)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
