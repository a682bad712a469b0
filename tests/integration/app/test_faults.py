"""Each fault, as a user sees it: responses, exit codes, process CPU and memory, the log."""

from __future__ import annotations

import statistics
import time

import httpx
import psycopg
import pytest

from tests.integration.app.conftest import StartApp
from tests.integration.app.support import cpu_rate, rss_bytes
from tests.support import wait_for


def _answer(client: httpx.Client, path: str, statuses: set[int]) -> httpx.Response | None:
    r = client.get(path)
    return r if r.status_code in statuses else None


def test_error_rate_fails_that_share_of_requests_before_any_write(
    start_app: StartApp, postgres_url: str
) -> None:
    app = start_app({"INJECT_ERROR_RATE": "0.3"})
    statuses = [app.client.get("/api/stats").status_code for _ in range(1000)]
    failed = statuses.count(500)
    assert 250 <= failed <= 350, f"{failed} of 1000 failed"
    assert set(statuses) <= {200, 500}
    r = wait_for(lambda: _answer(app.client, "/api/stats", {500}), 10, "an injected 500")
    assert r.json()["error"]["code"] == "internal_error"
    assert '"level":"ERROR"' in app.log
    assert '"injected_error"' in app.log
    # no write happens before the failure: a failed POST leaves no row behind
    key = f"err-{time.monotonic_ns()}"
    body = {
        "amount": "1.00",
        "currency": "EUR",
        "merchant_ref": "m",
        "customer_ref": "c",
        "card_token": "tok_visa_4242",
    }
    statuses = [
        app.client.post("/api/transactions", json=body, headers={"Idempotency-Key": f"{key}-{i}"}).status_code
        for i in range(40)
    ]
    assert set(statuses) == {201, 500}
    with psycopg.connect(postgres_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM transactions WHERE idempotency_key LIKE %s", (f"{key}-%",)
        ).fetchone()
    assert row is not None
    assert row[0] == statuses.count(201)
    assert app.client.get("/health").status_code == 200  # probes are spared
    metrics = app.client.get("/metrics").text
    assert 'payflow_http_requests_total{method="GET",route="/api/stats",status="500"}' in metrics
    assert 'payflow_fault_injections_total{fault="errorRate"}' in metrics


def test_latency_raises_p50_and_spares_probes(start_app: StartApp) -> None:
    app = start_app({"INJECT_LATENCY_MS": "200", "INJECT_LATENCY_JITTER_MS": "50"})

    def timed(path: str) -> float:
        t0 = time.perf_counter()
        assert app.client.get(path).status_code == 200
        return time.perf_counter() - t0

    api = [timed("/api/stats") for _ in range(15)]
    probes = [timed("/health") for _ in range(15)]
    assert statistics.median(api) >= 0.2
    assert statistics.median(probes) < 0.2
    assert '"injected_delay_ms"' in app.log


def test_db_timeout_exhausts_the_pool(start_app: StartApp) -> None:
    app = start_app(
        {
            "INJECT_DB_TIMEOUT": "true",
            "INJECT_DB_TIMEOUT_HOLD_S": "30",
            "PAYFLOW_DB_POOL_MAX": "3",
            "PAYFLOW_DB_POOL_TIMEOUT_S": "1",
        }
    )
    r = wait_for(
        lambda: _answer(app.client, "/api/transactions", {503, 504}),
        20,
        "the API to answer 503/504",
    )
    assert r.json()["error"]["code"] in ("db_pool_exhausted", "db_timeout")
    ready = app.client.get("/ready")
    assert ready.status_code == 503
    assert "exhausted" in ready.json()["checks"]["database"]["reason"]
    assert app.client.get("/health").status_code == 200
    metrics = app.client.get("/metrics").text
    assert "payflow_db_pool_timeouts_total" in metrics
    assert 'payflow_fault_active{fault="dbTimeout"} 1.0' in metrics


def test_oom_grows_memory_and_exits_137_at_the_ceiling(start_app: StartApp) -> None:
    app = start_app(
        {
            "INJECT_OOM": "true",
            "INJECT_OOM_GROWTH_KIB_PER_REQUEST": "1024",
            "INJECT_OOM_FLOOR_KIB_PER_SECOND": "2048",
            "PAYFLOW_OOM_CEILING_MB": "200",
        }
    )
    pid = app.process.pid
    assert pid is not None
    first = rss_bytes(pid)
    peak = first
    deadline = time.monotonic() + 90
    while app.process.running and time.monotonic() < deadline:
        try:
            peak = max(peak, rss_bytes(pid))
            app.client.get("/api/stats")
        except (httpx.HTTPError, OSError):
            break
    assert app.wait_exit(timeout=30) == 137
    assert peak - first > 32 << 20, f"memory grew only from {first >> 20} to {peak >> 20} MiB"
    assert "Out of memory" in app.log


def test_panic_crashes_with_a_stack_trace(start_app: StartApp) -> None:
    app = start_app({"INJECT_PANIC": "true", "INJECT_PANIC_PROBABILITY": "0.2"})
    deadline = time.monotonic() + 30
    while app.process.running and time.monotonic() < deadline:
        try:
            app.client.get("/api/stats")
        except httpx.HTTPError:
            break
    code = app.wait_exit(timeout=10)
    assert code == 70
    log = app.log
    assert "Traceback (most recent call last)" in log
    assert "InjectedPanicError" in log


def test_cpu_burn_uses_a_core(start_app: StartApp) -> None:
    app = start_app({"INJECT_CPU_BURN": "true", "INJECT_CPU_BURN_CORES": "1"})
    assert app.process.pid is not None
    rate = cpu_rate(app.process.pid, 3.0)
    assert rate >= 0.8, f"{rate:.2f} core-s/s"
    metrics = app.client.get("/metrics").text
    assert 'payflow_fault_parameter{fault="cpuBurn",param="cores"} 1.0' in metrics


@pytest.mark.parametrize("value", ["abc", "2.5"])
def test_an_invalid_environment_starts_without_faults(start_app: StartApp, value: str) -> None:
    app = start_app({"INJECT_ERROR_RATE": value})
    config = app.client.get("/api/config").json()
    assert config["faults"]["errorRate"]["active"] is False
    assert "INJECT_ERROR_RATE" in config["last_rejected"]["reason"]
    assert config["last_rejected"]["source"] == "environment"
