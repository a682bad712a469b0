"""Throughput and latency of the payment API, each beside a baseline measured in the same run.

    .venv/bin/python bench/api.py [--duration 3] [--concurrency 1,16,64] [--cm-samples 30]

Starts its own local stack (PostgreSQL, Redis, etcd, kube-apiserver) and one ``payflow-app``
process (one uvicorn worker, default settings, INFO request logs to a file), then measures at
each concurrency:

* ``POST /api/transactions`` beside the fair baseline, "raw POST writes": the writes one POST
  performs, without the app (the app's own statement: the transaction row under its unique
  Idempotency-Key and its two events, one database transaction, into the same tables), through
  a psycopg pool sized like the app's, ``concurrency`` workers. The goal is measured against it.
  For reference also beside the issue's literal baseline, a single-row autocommit ``INSERT``
  into a copy of the transactions table on one connection per worker (a third of the writes);
* ``GET /api/stats`` and ``GET /api/transactions?limit=50`` beside ``GET /health``, the bare
  endpoint of the same server (same middleware, no work);

and the delay from a patch of the faults ConfigMap to ``/api/config`` showing its
resourceVersion. The HTTP load comes from wrk (see bench/wrk.py: a C client, so the server keeps
the CPU a Python client would take), the psycopg baselines run in this process; all on the same
machine as the server. Goals: POST >= 0.6 x raw POST writes; stats >= 0.7 x bare endpoint.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
import psycopg
import uvloop
from psycopg_pool import AsyncConnectionPool

from bench.api_client import Connection, Result
from bench.wrk import run_wrk, wrk_binary
from payflow.app.repository import INSERT_TRANSACTION
from payflow.app.settings import Settings
from payflow.devstack.process import Process, free_port
from payflow.devstack.stack import LocalStack, StackConfig
from payflow.naming import faults_configmap_name

REPO = Path(__file__).resolve().parents[1]
RELEASE = "bench"
BODY = json.dumps(
    {
        "amount": "42.10",
        "currency": "EUR",
        "merchant_ref": "m_bench",
        "customer_ref": "c_bench",
        "card_token": "tok_visa_4242",
    }
).encode()
FINGERPRINT = hashlib.sha256(BODY).hexdigest()
POOL_MAX = int(Settings.model_fields["db_pool_max"].default)  # the app runs with its defaults


def _on_copies(sql: str) -> str:
    """The app's statement, writing into the copies made by :data:`RAW_TABLES`."""
    for table in ("transactions", "transaction_events"):
        target = f"INSERT INTO {table} "
        if sql.count(target) != 1:
            raise RuntimeError(f"the app's insert statement no longer writes {table} once")
        sql = sql.replace(target, f"INSERT INTO bench_raw_{table} ")
    return sql


RAW_INSERT_TRANSACTION = _on_copies(INSERT_TRANSACTION)
RAW_TABLES = (
    "CREATE TABLE bench_raw_transactions (LIKE transactions INCLUDING ALL)",
    "CREATE TABLE bench_raw_transaction_events (LIKE transaction_events INCLUDING ALL)",
    "ALTER TABLE bench_raw_transaction_events ADD FOREIGN KEY (transaction_id)"
    " REFERENCES bench_raw_transactions (id) ON DELETE CASCADE",
)


# (method, path, body, headers, header made unique per request) of each HTTP row
HttpCall = tuple[str, str, bytes, dict[str, str], str | None]
POST_TX: HttpCall = ("POST", "/api/transactions", BODY, {}, "Idempotency-Key")
BARE: HttpCall = ("GET", "/health", b"", {}, None)
STATS: HttpCall = ("GET", "/api/stats", b"", {}, None)
LIST: HttpCall = ("GET", "/api/transactions?limit=50", b"", {}, None)


async def raw_post_writes(url: str, concurrency: int, duration: float, warmup: float = 0.5) -> Result:
    """The fair baseline: what one POST writes, without the app. The app's own statement
    (``repository.INSERT_TRANSACTION``: the transaction row under its unique Idempotency-Key and
    its two events, one statement so one database transaction) into copies of its tables (same
    columns, defaults, indexes, unique key and foreign key; copies so that the app's own reads,
    the list and the stats, see only the app's rows), through a psycopg ``AsyncConnectionPool``
    sized like the app's (``PAYFLOW_DB_POOL_MAX``), with ``concurrency`` workers, as the HTTP load
    has ``concurrency`` connections."""
    result = Result()
    async with AsyncConnectionPool(
        url,
        min_size=min(concurrency, POOL_MAX),
        max_size=POOL_MAX,
        kwargs={"autocommit": True},
        open=False,
    ) as pool:
        await pool.wait(timeout=30)
        t_measure = time.perf_counter() + warmup
        t_end = t_measure + duration

        async def worker() -> None:
            while time.perf_counter() < t_end:
                t0 = time.perf_counter()
                async with pool.connection() as conn:
                    cur = await conn.execute(
                        RAW_INSERT_TRANSACTION,
                        {
                            "key": f"raw-{uuid.uuid4().hex}",
                            "hash": FINGERPRINT,
                            "amount": Decimal("42.10"),
                            "currency": "EUR",
                            "merchant": "m_bench",
                            "customer": "c_bench",
                            "token": "tok_visa_4242",
                            "description": None,
                            "status": "authorized",
                            "reason": None,
                        },
                    )
                    await cur.fetchone()
                t1 = time.perf_counter()
                result.done += 1
                if t0 >= t_measure and t1 <= t_end:
                    result.add(t1 - t0)

        cpu0 = time.process_time()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        result.cpu_s = time.process_time() - cpu0
    result.elapsed = duration
    return result


async def raw_single_inserts(url: str, concurrency: int, duration: float, warmup: float = 0.5) -> Result:
    """The issue's literal baseline, kept for reference: one autocommit single-row INSERT into a
    copy of the transactions table (no events), one dedicated connection per worker. A POST
    writes three rows with their indexes and a foreign key, so this is not what the goal should
    be measured against (see docs/api.md)."""
    result = Result()
    conns = [await psycopg.AsyncConnection.connect(url, autocommit=True) for _ in range(concurrency)]
    t_measure = time.perf_counter() + warmup
    t_end = t_measure + duration
    sql = (
        "INSERT INTO bench_raw_transactions (idempotency_key, request_hash, amount, currency, merchant_ref,"
        " customer_ref, card_token, status, decided_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, now())"
        " RETURNING id"
    )

    async def worker(conn: psycopg.AsyncConnection[object]) -> None:
        while time.perf_counter() < t_end:
            t0 = time.perf_counter()
            cur = await conn.execute(
                sql,
                (uuid.uuid4().hex, "h", "42.10", "EUR", "m_bench", "c_bench", "tok_visa_4242", "authorized"),
            )
            await cur.fetchone()
            t1 = time.perf_counter()
            result.done += 1
            if t0 >= t_measure and t1 <= t_end:
                result.add(t1 - t0)

    cpu0 = time.process_time()
    await asyncio.gather(*(worker(c) for c in conns))
    result.cpu_s = time.process_time() - cpu0
    result.elapsed = duration
    for c in conns:
        await c.close()
    return result


def fmt(r: Result) -> str:
    return (
        f"{r.rate:9.0f} {r.percentile(0.5) * 1000:8.2f} {r.percentile(0.99) * 1000:8.2f}"
        f" {r.cpu_per_request_us:7.0f}"
    )


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def with_server_cpu(pid: int, run: Awaitable[Result]) -> Result:
    """``run``, with the CPU the server process spent on it."""
    cpu0 = process_cpu_s(pid)
    result = await run
    result.cpu_s = process_cpu_s(pid) - cpu0
    return result


def merge(parts: list[Result]) -> Result:
    out = Result()
    for r in parts:
        out.latencies += r.latencies
        out.weighted += r.weighted
        out.count += r.count
        out.failures += r.failures
        out.elapsed += r.elapsed
        out.done += r.done
        out.cpu_s += r.cpu_s
    return out


async def interleaved(
    slices: int, duration: float, runs: dict[str, Callable[[float], Awaitable[Result]]]
) -> dict[str, Result]:
    """Run each measurement in ``slices`` turns, one after the other, so a change in the
    machine's background load hits the API and its baseline alike."""
    parts: dict[str, list[Result]] = {name: [] for name in runs}
    for _ in range(slices):
        for name, run in runs.items():
            parts[name].append(await run(duration / slices))
    return {name: merge(p) for name, p in parts.items()}


async def measure(
    app_port: int,
    app_pid: int,
    minimal_port: int,
    minimal_pid: int,
    db_url: str,
    levels: list[int],
    duration: float,
    slices: int,
) -> list[str]:
    rows = []
    header = (
        f"{'endpoint':<28}{'conc':>5} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'CPU us':>7}   "
        f"{'baseline':<22} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'CPU us':>7} {'ratio':>6}  goal"
    )
    print(header, flush=True)
    rows.append(header)
    host = "127.0.0.1"
    for c in levels:

        def http(
            call: HttpCall, c: int = c, port: int = app_port, pid: int = app_pid
        ) -> Callable[[float], Awaitable[Result]]:
            method, path, body, headers, key = call

            def run(d: float) -> Awaitable[Result]:
                seconds = max(1, round(d))  # wrk counts whole seconds
                load = asyncio.to_thread(run_wrk, host, port, c, seconds, method, path, body, headers, key)
                return with_server_cpu(pid, load)

            return run

        minimal = http(POST_TX, port=minimal_port, pid=minimal_pid)
        for warm_up in (http(POST_TX), http(BARE), http(STATS), http(LIST), minimal):  # not measured
            await warm_up(1)
        res = await interleaved(
            slices,
            duration,
            {
                "raw": lambda d, c=c: raw_post_writes(db_url, c, d, warmup=0.2),  # type: ignore[misc]
                "post": http(POST_TX),
                "raw1": lambda d, c=c: raw_single_inserts(db_url, c, d, warmup=0.2),  # type: ignore[misc]
                "bare": http(BARE),
                "stats": http(STATS),
                "list": http(LIST),
                "minimal": minimal,
            },
        )
        for name, r, base_name, base, goal in (
            ("POST /api/transactions", res["post"], "raw POST writes, pool", res["raw"], 0.6),
            ("POST /api/transactions", res["post"], "raw 1-row INSERT (ref)", res["raw1"], None),
            ("POST, minimal ASGI (ref)", res["minimal"], "raw POST writes, pool", res["raw"], None),
            ("GET /api/stats", res["stats"], "GET /health (bare)", res["bare"], 0.7),
            ("GET /api/transactions", res["list"], "GET /health (bare)", res["bare"], None),
        ):
            ratio = r.rate / base.rate if base.rate else float("nan")
            verdict = "" if goal is None else (f">={goal} ok" if ratio >= goal else f">={goal} MISSED")
            line = f"{name:<28}{c:>5} {fmt(r)}   {base_name:<22} {fmt(base)} {ratio:6.2f}  {verdict}"
            if r.failures:
                line += f"  {r.failures} requests not answered 2xx"
            rows.append(line)
            print(line, flush=True)
    return rows


async def configmap_latency(core: object, namespace: str, port: int, samples: int) -> list[float]:
    from kubernetes import client  # typed as Any

    api = client.CoreV1Api(core)
    name = faults_configmap_name(RELEASE)
    conn = Connection("127.0.0.1", port)
    await conn.open()
    delays = []
    try:
        for i in range(samples):
            patched = await asyncio.to_thread(
                api.patch_namespaced_config_map,
                name,
                namespace,
                {"data": {"INJECT_LATENCY_MS": "0", "INJECT_LATENCY_JITTER_MS": str(i % 2)}},
            )
            t0 = time.perf_counter()
            rv = patched.metadata.resource_version
            deadline = t0 + 10
            while time.perf_counter() < deadline:
                _, body = await conn.request("GET", "/api/config")
                if json.loads(body)["resource_version"] == rv:
                    delays.append(time.perf_counter() - t0)
                    break
            else:
                print(f"  sample {i}: change not seen within 10 s", flush=True)
    finally:
        await conn.close()
    return delays


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=3.0, help="seconds measured per cell")
    parser.add_argument("--concurrency", default="1,16,64")
    parser.add_argument("--cm-samples", type=int, default=30)
    parser.add_argument("--slices", type=int, default=3, help="turns each measurement is split into")
    args = parser.parse_args()
    levels = [int(x) for x in args.concurrency.split(",")]
    wrk = wrk_binary()  # before minutes of set-up: without wrk there is nothing to measure

    from kubernetes import client, config

    with tempfile.TemporaryDirectory(prefix="payflow-bench-api-") as tmp:
        stack = LocalStack(
            StackConfig(workdir=Path(tmp) / "stack", components=("postgres", "redis", "kube-apiserver"))
        )
        app: Process | None = None
        minimal: Process | None = None
        try:
            print("starting the local stack ...", flush=True)
            stack.start()
            api_client = config.new_client_from_config(config_file=str(stack.kubeconfig))
            core = client.CoreV1Api(api_client)
            core.create_namespaced_config_map(
                "default",
                client.V1ConfigMap(
                    metadata=client.V1ObjectMeta(name=faults_configmap_name(RELEASE)),
                    data={"INJECT_LATENCY_MS": "0"},
                ),
            )
            port = free_port()
            env = {
                "PATH": "/usr/bin:/bin",
                **stack.env(),
                "PAYFLOW_HOST": "127.0.0.1",
                "PAYFLOW_PORT": str(port),
                "PAYFLOW_RELEASE": RELEASE,
                "PAYFLOW_NAMESPACE": "default",
            }
            app = Process(
                "payflow-app", [sys.executable, "-m", "payflow.app.main"], Path(tmp) / "app.log", env=env
            )
            app.start()
            app.wait_ready(
                lambda: httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200, 60
            )
            minimal_port = free_port()
            minimal = Process(
                "minimal-app",
                [sys.executable, "-m", "bench.minimal_app"],
                Path(tmp) / "minimal.log",
                env={**env, "PAYFLOW_PORT": str(minimal_port)},
                cwd=REPO,
            )
            minimal.start()
            minimal.wait_ready(
                lambda: httpx.get(f"http://127.0.0.1:{minimal_port}/health", timeout=1).status_code == 200, 60
            )
            with psycopg.connect(stack.database_url, autocommit=True) as conn:
                for ddl in RAW_TABLES:
                    conn.execute(ddl)
            print(
                f"app on 127.0.0.1:{port} (one uvicorn worker, uvloop + httptools, default settings); "
                f"HTTP load from {wrk} (one thread, one connection per concurrent request); "
                f"{args.duration:.0f} s per cell in {args.slices} interleaved turns; concurrency {levels}\n"
                f"POST goal against 'raw POST writes, pool' (the same writes without the app, pool of "
                f"{POOL_MAX}); 'raw 1-row INSERT' is the issue's literal baseline, for reference; "
                "'minimal ASGI' is bench/minimal_app.py: uvicorn and the pool running the same insert, "
                "and nothing else\n",
                flush=True,
            )
            t0 = time.monotonic()
            # uvloop, as the app runs on: the baselines' psycopg loop gets the same event loop.
            assert app.popen is not None
            assert minimal.popen is not None
            uvloop.run(
                measure(
                    port,
                    app.popen.pid,
                    minimal_port,
                    minimal.popen.pid,
                    stack.database_url,
                    levels,
                    args.duration,
                    args.slices,
                )
            )
            print(
                "\nCPU us: CPU time per request of the app process (HTTP rows) or of the psycopg client "
                "(raw rows), warm-up included; PostgreSQL's share is not in it.",
                flush=True,
            )
            delays = uvloop.run(configmap_latency(api_client, "default", port, args.cm_samples))
            if delays:
                ms = sorted(d * 1000 for d in delays)
                print(
                    f"\nConfigMap patch -> /api/config ({len(ms)} samples): min {ms[0]:.1f} ms, "
                    f"p50 {statistics.median(ms):.1f} ms, p90 {ms[int(0.9 * (len(ms) - 1))]:.1f} ms, "
                    f"max {ms[-1]:.1f} ms",
                    flush=True,
                )
            print(f"\nmeasured in {time.monotonic() - t0:.0f} s", flush=True)
            api_client.close()
        finally:
            for proc in (app, minimal):
                if proc is not None:
                    proc.stop()
            stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
