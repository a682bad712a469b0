"""The I/O shell of the load generator: send the planned requests with httpx, on schedule."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import httpx
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from payflow.loadgen.model import Kind, Mix, Picker, Tally, arrivals, new_payment


@dataclass(frozen=True)
class LoadConfig:
    target: str  # the API's base URL, e.g. http://127.0.0.1:8080
    rate: float  # arrivals per second (Poisson)
    duration: float  # seconds; the run always ends
    mix: Mix = field(default_factory=Mix)
    max_in_flight: int = 256  # beyond that an arrival is dropped (and counted), never queued
    timeout: float = 10.0
    seed: int | None = None


class LoadMetrics:
    """The generator's own Prometheus metrics (served with --metrics-port)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.requests = Counter(
            "payflow_loadgen_requests_total",
            "Requests sent by the load generator, by kind and outcome.",
            ["kind", "outcome"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "payflow_loadgen_request_duration_seconds",
            "Time from sending a request to its full answer, as the client sees it.",
            ["kind"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "payflow_loadgen_in_flight", "Requests sent and not answered yet.", registry=self.registry
        )
        self.dropped = Counter(
            "payflow_loadgen_dropped_total",
            "Arrivals not sent because max_in_flight requests were already waiting.",
            registry=self.registry,
        )


class LoadGenerator:
    def __init__(self, config: LoadConfig, metrics: LoadMetrics | None = None) -> None:
        self.config = config
        self.metrics = metrics or LoadMetrics()
        self.tally = Tally()
        self._rng = random.Random(config.seed)
        self._picker = Picker(config.mix, self._rng)
        self._created: deque[str] = deque(maxlen=1000)  # ids to look up
        self._sent_creates: deque[tuple[str, dict[str, Any]]] = deque(maxlen=200)  # to retry
        self._in_flight = 0
        self.started_at = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.started_at

    def _plan(self, kind: Kind) -> tuple[Kind, str, str, dict[str, Any] | None, dict[str, str]]:
        """(kind, method, path, body, headers) of the next request."""
        if kind is Kind.RETRY and not self._sent_creates:
            kind = Kind.CREATE
        if kind is Kind.LOOKUP and not self._created:
            kind = Kind.LIST
        if kind is Kind.CREATE:
            key, body = str(uuid.UUID(int=self._rng.getrandbits(128))), new_payment(self._rng)
            self._sent_creates.append((key, body))
            return kind, "POST", "/api/transactions", body, {"Idempotency-Key": key}
        if kind is Kind.RETRY:
            key, body = self._sent_creates[self._rng.randrange(len(self._sent_creates))]
            return kind, "POST", "/api/transactions", body, {"Idempotency-Key": key}
        if kind is Kind.LOOKUP:
            tid = self._created[self._rng.randrange(len(self._created))]
            return kind, "GET", f"/api/transactions/{tid}", None, {}
        if kind is Kind.STATS:
            return kind, "GET", "/api/stats", None, {}
        return kind, "GET", "/api/transactions?limit=20", None, {}

    async def _send(
        self, client: httpx.AsyncClient, planned: tuple[Kind, str, str, Any, dict[str, str]]
    ) -> None:
        kind, method, path, body, headers = planned
        status: int | None = None
        t0 = time.perf_counter()
        self._in_flight += 1
        self.metrics.in_flight.inc()
        try:
            resp = await client.request(method, path, json=body, headers=headers)
            status = resp.status_code
            if kind is Kind.CREATE and status in (200, 201):
                tid = resp.json().get("id")
                if tid:
                    self._created.append(str(tid))
        except (httpx.HTTPError, ValueError):
            status = None
        finally:
            seconds = time.perf_counter() - t0
            self._in_flight -= 1
            self.metrics.in_flight.dec()
            self.tally.record(kind, status, seconds)
            ok = status is not None and 200 <= status < 300
            self.metrics.requests.labels(kind.value, "success" if ok else "failure").inc()
            self.metrics.duration.labels(kind.value).observe(seconds)

    async def run(self) -> dict[str, Any]:
        """Send every planned arrival on time; wait for the answers (bounded); the summary."""
        cfg = self.config
        limits = httpx.Limits(max_connections=cfg.max_in_flight, max_keepalive_connections=cfg.max_in_flight)
        tasks: set[asyncio.Task[None]] = set()
        async with httpx.AsyncClient(base_url=cfg.target, timeout=cfg.timeout, limits=limits) as client:
            loop = asyncio.get_running_loop()
            start = loop.time()
            self.started_at = time.monotonic()
            for at in arrivals(cfg.rate, cfg.duration, self._rng):
                delay = start + at - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                kind = self._picker.pick()
                if self._in_flight >= cfg.max_in_flight:
                    self.tally.dropped += 1
                    self.metrics.dropped.inc()
                    continue
                self.tally.sent[kind] = self.tally.sent.get(kind, 0) + 1
                task = asyncio.create_task(self._send(client, self._plan(kind)))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            sent_for = loop.time() - start
            if tasks:
                await asyncio.wait(tasks, timeout=cfg.timeout + 1)
            for t in tasks:
                t.cancel()
        summary = self.tally.summary(max(sent_for, cfg.duration))
        summary["target_rate_per_s"] = cfg.rate
        return summary
