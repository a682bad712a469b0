"""The dashboard's series on real Redis: replicas add up, Redis down falls back to memory."""

from __future__ import annotations

import uuid

import httpx

from payflow.app.series import SeriesRecorder, series
from payflow.app.series_store import SeriesStore
from payflow.devstack.process import free_port

NOW = 1_800_000_000.0


def store(url: str, release: str, recorder: SeriesRecorder) -> SeriesStore:
    return SeriesStore(recorder, url, release, timeout_s=0.25, retry_after_s=60, clock=lambda: NOW)


async def test_two_replicas_add_up_in_redis(redis_url: str) -> None:
    release = f"r{uuid.uuid4().hex[:8]}"
    a, b = SeriesRecorder(clock=lambda: NOW - 7), SeriesRecorder(clock=lambda: NOW - 7)
    store_a, store_b = store(redis_url, release, a), store(redis_url, release, b)
    try:
        for _ in range(30):
            a.add(0.010, False)
        await store_a.flush()
        for _ in range(10):
            b.add(2.0, True)
        await store_b.flush()
        b.add(2.0, True)  # recorded, not flushed yet: a read of its own replica includes it
        buckets, source = await store_b.buckets(NOW - 60, NOW)
        assert source == "redis"
        (start,) = [s for s, bucket in buckets.items() if bucket.requests]
        assert (buckets[start].requests, buckets[start].errors) == (41, 11)
        # The other replica sees what both flushed, not b's unflushed request.
        others, _ = await store_a.buckets(NOW - 60, NOW)
        assert others[start].requests == 40
        (point,) = [p for p in series(buckets, NOW, minutes=1, step=5) if p.t == start]
        assert point.error_ratio == round(11 / 41, 4)
        assert point.p50_ms is not None
        assert point.p50_ms < 12
        assert point.p95_ms is not None
        assert point.p95_ms > 1800
    finally:
        await store_a.stop()
        await store_b.stop()


async def test_without_redis_the_series_comes_from_memory(redis_url: str) -> None:
    rec = SeriesRecorder(clock=lambda: NOW - 3)
    down = store(f"redis://127.0.0.1:{free_port()}/0", f"r{uuid.uuid4().hex[:8]}", rec)
    try:
        for _ in range(5):
            rec.add(0.05, False)
        await down.flush()
        assert down.last_error is not None
        assert sum(b.requests for b in down.unsent.values()) == 5  # kept for when Redis is back
        rec.add(0.05, True)
        buckets, source = await down.buckets(NOW - 60, NOW)
        assert source == "memory"
        assert sum(b.requests for b in buckets.values()) == 6
        assert sum(b.errors for b in buckets.values()) == 1
    finally:
        await down.stop()


async def test_the_series_endpoint(asgi_client: httpx.AsyncClient) -> None:
    for _ in range(3):
        await asgi_client.get("/api/transactions", params={"limit": 1})
    await asgi_client.get("/api/config")  # spared: not counted as traffic
    resp = await asgi_client.get("/api/stats/series", params={"minutes": 15, "step": 5})
    assert resp.status_code == 200
    assert resp.headers["cache-control"] == "no-store"
    body = resp.json()
    assert body["source"] == "redis"
    assert len(body["points"]) == 180
    assert sum(p["requests"] for p in body["points"]) == 3
    assert set(body["points"][0]) == {"t", "requests", "rate_per_s", "error_ratio", "p50_ms", "p95_ms"}
    bad = await asgi_client.get("/api/stats/series", params={"step": 7})
    assert bad.status_code == 400
    assert bad.json()["error"]["code"] == "invalid_filter"
