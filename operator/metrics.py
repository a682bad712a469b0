"""The operator's own metrics and its liveness endpoint, on one port: ``/metrics`` and ``/healthz``."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from payflow.operator.core import Phase

RECONCILE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class PhaseBook:
    """The phase of every incident the operator watches, as the watch stream reports it."""

    def __init__(self) -> None:
        self._phases: dict[tuple[str, str], str] = {}

    def record(self, namespace: str, name: str, phase: str | None, gone: bool = False) -> None:
        if gone:
            self._phases.pop((namespace, name), None)
        else:
            self._phases[(namespace, name)] = phase or Phase.PENDING.value

    def counts(self) -> Mapping[str, int]:
        counts = {p.value: 0 for p in Phase}
        for phase in self._phases.values():
            counts[phase] = counts.get(phase, 0) + 1
        return counts


class _PhaseCollector(Collector):
    def __init__(self, book: PhaseBook) -> None:
        self._book = book

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "payflow_operator_incidents",
            "PayFlowIncidents watched by the operator, by phase.",
            labels=["phase"],
        )
        for phase, count in sorted(self._book.counts().items()):
            family.add_metric([phase], count)
        yield family


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.phases = PhaseBook()
        self.registry.register(_PhaseCollector(self.phases))
        self.reconcile_seconds = Histogram(
            "payflow_operator_reconcile_duration_seconds",
            "Time to reconcile one target (read, decide, write), by result.",
            ["result"],
            buckets=RECONCILE_BUCKETS,
            registry=self.registry,
        )
        self.errors = Counter(
            "payflow_operator_reconcile_errors_total",
            "Reconciles that failed (and will be retried), by error type.",
            ["error"],
            registry=self.registry,
        )
        self.started = time.time()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class HttpServer:
    """``/healthz`` (the event loop answers) and ``/metrics`` (Prometheus text)."""

    def __init__(self, metrics: Metrics, host: str, port: int) -> None:
        self.metrics = metrics
        self.host, self.port = host, port
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"status": "ok", "uptimeSeconds": round(time.time() - self.metrics.started, 1)}
        )

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=self.metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})
