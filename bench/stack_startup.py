"""How long the local stack takes to be ready, per part, with a warm tool cache.

    .venv/bin/python -m bench.stack_startup [--runs 5]

Each run starts the whole stack in a fresh throwaway directory (certificates, initdb, etcd
data), waits until every part answers its readiness check, and stops it. Goal: the whole
stack ready in 15 s or less.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from payflow.devstack.stack import ALL_COMPONENTS, LocalStack, StackConfig


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    per_part: dict[str, list[float]] = {name: [] for name in ALL_COMPONENTS}
    totals: list[float] = []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="payflow-bench-") as tmp:
            stack = LocalStack(StackConfig(workdir=Path(tmp) / "stack"))
            t0 = time.monotonic()
            try:
                timings = stack.start()
                totals.append(time.monotonic() - t0)
            finally:
                stack.stop()
            for name, seconds in timings.items():
                per_part[name].append(seconds)

    print(f"stack_startup: {args.runs} cold starts of the whole stack (warm tool cache)")
    print("per part: seconds from its launch to its readiness check passing")
    print(f"{'part':<26}{'median s':>10}{'max s':>10}")
    for name, xs in per_part.items():
        print(f"{name:<26}{statistics.median(xs):>10.2f}{max(xs):>10.2f}")
    median, worst = statistics.median(totals), max(totals)
    print(f"{'whole stack (start to ready)':<26}{median:>10.2f}{worst:>10.2f}")
    print(f"goal <= 15 s: {'met' if worst <= 15 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
