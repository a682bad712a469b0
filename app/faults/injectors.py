"""The six injectors. Each reads the fault state in force; each is bounded and safe for the host.

Pure decisions (how long to wait, whether to fail, the memory ceiling) are plain functions; the
classes below hold the few threads and tasks that act on the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import os
import random
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from psycopg_pool import AsyncConnectionPool, PoolTimeout

from payflow.app import logs, metrics
from payflow.app.cache import ResponseCache
from payflow.app.faults.ground_truth import MEMORY_CEILING, PANIC, PANIC_EXIT_CODE
from payflow.faults import Number

log = logging.getLogger("payflow.app.faults")

OOM_EXIT_CODE = 137  # 128 + SIGKILL: what the kernel's OOM killer leaves
MAX_BURN_THREADS = 4  # the vocabulary's maximum of cores


class InjectedPanicError(RuntimeError):
    """The crash of the panic fault."""


# --- pure decisions ------------------------------------------------------------------------------


def latency_seconds(params: Mapping[str, Number], rng: random.Random) -> float:
    delay = float(params["delayMs"])
    jitter = float(params.get("jitterMs", 0))
    return (delay + (rng.uniform(0, jitter) if jitter > 0 else 0.0)) / 1000.0


def chance(probability: float, rng: random.Random) -> bool:
    return probability > 0 and rng.random() < probability


def tick_probability(mean_interval_s: float, tick_s: float) -> float:
    """Probability that an exponential clock of mean ``mean_interval_s`` fires within a tick."""
    if mean_interval_s <= 0:
        return 0.0
    return 1.0 - math.exp(-tick_s / mean_interval_s)


def parse_memory_limit(text: str | None) -> int | None:
    """A cgroup memory limit file's content as bytes; None for no limit ("max", or v1's huge
    sentinel)."""
    if text is None:
        return None
    value = text.strip()
    if not value or value == "max":
        return None
    try:
        limit = int(value)
    except ValueError:
        return None
    return None if limit >= 1 << 60 else limit


def cgroup_memory_limit(cgroup_dir: str) -> int | None:
    for rel in ("memory.max", "memory/memory.limit_in_bytes"):
        try:
            return parse_memory_limit((Path(cgroup_dir) / rel).read_text())
        except OSError:
            continue
    return None


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def burn_plan(cores: float, cpu_count: int) -> tuple[int, float]:
    """Threads to start and the busy share of each, for ``cores`` cores of CPU."""
    cores = max(0.0, min(cores, float(cpu_count), float(MAX_BURN_THREADS)))
    if cores <= 0:
        return 0, 0.0
    threads = math.ceil(cores)
    return threads, cores / threads


# --- the crash ----------------------------------------------------------------------------------

# Told of each crash the process causes itself, just before it ends: (fault, reason, exit code).
# Set by the fault controller (it records the crash); it bounds its own wait.
CrashHook = Callable[[str, str, int], None]
_crash_hook: CrashHook | None = None


def set_crash_hook(hook: CrashHook | None) -> None:
    global _crash_hook
    _crash_hook = hook


def _report_crash(fault: str, reason: str, exit_code: int) -> None:
    hook = _crash_hook
    if hook is None:
        return
    try:
        hook(fault, reason, exit_code)
    except Exception:  # the crash goes on whatever happens here
        log.exception("could not record the crash")


def _raise_panic(where: str) -> None:
    raise InjectedPanicError(f"panic: injected crash ({where})")


def crash(where: str) -> None:
    """Log the panic with its stack trace and end the process at once with a non-zero code."""
    try:
        _raise_panic(where)
    except InjectedPanicError:
        metrics.FAULT_INJECTIONS.labels("panic").inc()
        log.critical(
            "panic: the process crashes (%s)", where, exc_info=True, stack_info=True, extra={"fault": "panic"}
        )
    _report_crash("panic", PANIC, PANIC_EXIT_CODE)
    logs.flush()
    os._exit(PANIC_EXIT_CODE)


# --- OOM ------------------------------------------------------------------------------------------


class MemoryLeak:
    """The OOM fault: the response cache keeps what it should evict."""

    def __init__(self, cache: ResponseCache, ceiling_bytes: int, cgroup_limit: int | None) -> None:
        self.cache = cache
        self.cgroup_limit = cgroup_limit
        self.ceiling = cgroup_limit if cgroup_limit is not None else ceiling_bytes

    def grow(self, nbytes: int) -> None:
        if nbytes <= 0:
            return
        self.cache.leak(nbytes)
        metrics.FAULT_INJECTIONS.labels("oom").inc()
        self.check()

    def check(self) -> None:
        rss = rss_bytes()
        if rss < self.ceiling:
            return
        if self.cgroup_limit is not None:
            return  # inside a container: the kernel's OOM killer acts at the limit, not us
        log.error(
            "Out of memory: resident %d MiB reached the safe ceiling %d MiB; killing the process",
            rss >> 20,
            self.ceiling >> 20,
            extra={"fault": "oom", "rss_bytes": rss, "ceiling_bytes": self.ceiling},
        )
        _report_crash("oom", MEMORY_CEILING, OOM_EXIT_CODE)
        logs.flush()
        os._exit(OOM_EXIT_CODE)


# --- CPU burn -------------------------------------------------------------------------------------


class CpuBurner:
    """Threads that hash a large buffer (hashlib releases the GIL on large inputs, so each
    thread burns a real core) for a duty share of every 100 ms."""

    PERIOD = 0.1

    def __init__(self) -> None:
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self.cores = 0.0

    def set(self, cores: float) -> None:
        if cores == self.cores:
            return
        self.stop()
        self.cores = cores
        threads, duty = burn_plan(cores, os.cpu_count() or 1)
        if threads == 0:
            return
        self._stop = threading.Event()
        for i in range(threads):
            t = threading.Thread(
                target=self._burn, args=(duty, self._stop), name=f"cpu-burn-{i}", daemon=True
            )
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        """Ask the threads to end; each does within one period (no join: this runs on the
        event loop)."""
        self._stop.set()
        self._threads = []
        self.cores = 0.0

    def _burn(self, duty: float, stop: threading.Event) -> None:
        buf = os.urandom(1 << 18)
        while not stop.is_set():
            start = time.monotonic()
            busy_until = start + duty * self.PERIOD
            while time.monotonic() < busy_until:
                hashlib.sha256(buf).digest()
            rest = self.PERIOD - (time.monotonic() - start)
            if rest > 0:
                stop.wait(rest)


# --- DB timeout -----------------------------------------------------------------------------------


class ConnectionHolder:
    """The DB timeout fault: tasks that take pool connections and keep each in a long
    transaction (``holdSeconds``), release it, and take one again."""

    def __init__(self, pool: AsyncConnectionPool[Any]) -> None:
        self.pool = pool
        self._tasks: list[asyncio.Task[None]] = []
        self._stop = asyncio.Event()
        self.params: tuple[int, int] | None = None

    async def set(self, params: Mapping[str, Number] | None) -> None:
        wanted = None if params is None else (int(params["holdSeconds"]), int(params["connections"]))
        if wanted == self.params:
            return
        await self.stop()
        self.params = wanted
        if wanted is None:
            return
        hold, count = wanted
        n = count or self.pool.max_size
        self._stop = asyncio.Event()
        self._tasks = [
            asyncio.create_task(self._hold(hold, self._stop), name=f"db-hold-{i}") for i in range(n)
        ]

    async def stop(self) -> None:
        self._stop.set()
        tasks, self._tasks = self._tasks, []
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=3)
            for t in pending:
                t.cancel()
        self.params = None

    async def _hold(self, hold: int, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                async with self.pool.connection(timeout=1.0) as conn, conn.transaction():
                    metrics.FAULT_INJECTIONS.labels("dbTimeout").inc()
                    await conn.execute("SELECT txid_current()")
                    for _ in range(hold):
                        if stop.is_set():
                            break
                        await conn.execute("SELECT pg_sleep(1)")
            except PoolTimeout:
                continue
            except Exception as exc:  # the database went away: try again shortly
                log.warning("db timeout injector: %s", exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)


# --- the background clocks of OOM and panic ---------------------------------------------------------


class Ticker:
    """One task, one tick a second: the OOM floor growth and the panic clock without traffic."""

    def __init__(self, state: Callable[[], Mapping[str, Mapping[str, Number]]], leak: MemoryLeak) -> None:
        self._state = state
        self._leak = leak
        self._task: asyncio.Task[None] | None = None
        self.rng = random.Random()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="fault-ticker")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        tick = 1.0
        while True:
            await asyncio.sleep(tick)
            active = self._state()
            oom = active.get("oom")
            if oom is not None:
                self._leak.grow(int(oom["floorKiBPerSecond"]) * 1024)
            panic = active.get("panic")
            if panic is not None and chance(
                tick_probability(float(panic["meanIntervalSeconds"]), tick), self.rng
            ):
                crash("mean interval elapsed without traffic")
