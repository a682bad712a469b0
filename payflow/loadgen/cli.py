"""``payflow-loadgen``: Poisson arrivals at a set rate against a PayFlow API, for a bounded time.

    payflow-loadgen --target http://127.0.0.1:8080 --rate 20 --duration 300
    payflow-loadgen --target http://payflow-api --rate 50 --duration 0   # 0: run until stopped

It prints one JSON summary at the end (sent, succeeded, failed, dropped, p50/p95/p99) and,
with --metrics-port, serves its own Prometheus metrics while it runs (on loopback unless
--metrics-host says otherwise).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from prometheus_client import start_http_server

from payflow.loadgen.model import Mix
from payflow.loadgen.runner import LoadConfig, LoadGenerator, LoadMetrics

FOREVER = 10 * 365 * 24 * 3600.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="payflow-loadgen", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--target", required=True, help="the API's base URL")
    p.add_argument("--rate", type=float, default=10.0, help="arrivals per second (default 10)")
    p.add_argument("--duration", type=float, default=60.0, help="seconds (default 60; 0: until stopped)")
    p.add_argument(
        "--mix",
        type=Mix.parse,
        default=Mix(),
        help="shares of create,retry,list,stats,lookup, e.g. create=0.5,list=0.5",
    )
    p.add_argument("--max-in-flight", type=int, default=256)
    p.add_argument("--timeout", type=float, default=10.0, help="per request, seconds")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--metrics-port", type=int, default=0, help="serve /metrics on this port (0: off)")
    p.add_argument(
        "--metrics-host",
        default="127.0.0.1",
        help="address of /metrics (default 127.0.0.1; the chart's pod passes 0.0.0.0)",
    )
    args = p.parse_args(argv)
    if args.rate <= 0 or args.duration < 0 or args.max_in_flight < 1:
        p.error("--rate must be above 0, --duration at least 0, --max-in-flight at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    metrics = LoadMetrics()
    if args.metrics_port:
        start_http_server(args.metrics_port, addr=args.metrics_host, registry=metrics.registry)
    config = LoadConfig(
        target=args.target,
        rate=args.rate,
        duration=args.duration or FOREVER,
        mix=args.mix,
        max_in_flight=args.max_in_flight,
        timeout=args.timeout,
        seed=args.seed,
    )
    generator = LoadGenerator(config, metrics)
    try:
        summary = asyncio.run(generator.run())
    except KeyboardInterrupt:
        summary = generator.tally.summary(generator.elapsed())
    json.dump(summary, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
