"""Redis outage, concurrent migrations."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from payflow.app.migrations import MIGRATIONS, migrate
from payflow.devstack.stack import LocalStack, StackConfig
from tests.integration.app.conftest import StartApp


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[LocalStack]:
    """A Redis of this test alone, so it can be stopped."""
    stack = LocalStack(StackConfig(workdir=tmp_path / "redis-stack", components=("redis",)))
    stack.start()
    yield stack
    stack.stop()


def test_redis_stopped_mid_run_never_gives_a_5xx(start_app: StartApp, own_redis: LocalStack) -> None:
    app = start_app({"REDIS_URL": own_redis.redis_url})
    body = {
        "amount": "3.00",
        "currency": "GBP",
        "merchant_ref": "m",
        "customer_ref": "c",
        "card_token": "tok_visa_4242",
    }
    statuses: list[int] = []

    def round_trip() -> None:
        r = app.client.post("/api/transactions", json=body, headers={"Idempotency-Key": uuid.uuid4().hex})
        statuses.append(r.status_code)
        tx = r.json()["id"]
        for path in (f"/api/transactions/{tx}", "/api/stats", "/api/transactions?limit=5"):
            statuses.append(app.client.get(path).status_code)

    for _ in range(10):
        round_trip()
    assert app.client.get("/ready").json()["status"] == "ready"
    own_redis.stop_component("redis")
    for _ in range(20):
        round_trip()
    ready = app.client.get("/ready")
    assert ready.status_code == 200
    assert ready.json()["status"] == "degraded"
    assert ready.json()["checks"]["redis"]["ok"] is False
    own_redis.start_component("redis")
    for _ in range(5):
        round_trip()
    assert all(s < 500 for s in statuses), statuses
    assert "redis unavailable" in app.log


async def test_three_replicas_migrating_at_once_apply_each_version_once(postgres_url: str) -> None:
    db = f"mig_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{db}"')
    url = postgres_url.rsplit("/", 1)[0] + f"/{db}"
    try:

        async def one() -> list[int]:
            async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
                return await migrate(conn)

        results = await asyncio.gather(one(), one(), one())
        applied = sorted(v for r in results for v in r)
        assert applied == [m[0] for m in MIGRATIONS]
        assert await one() == []  # idempotent: nothing left to apply
        with psycopg.connect(url) as conn:
            rows = conn.execute("SELECT version FROM schema_migrations ORDER BY version").fetchall()
        assert [r[0] for r in rows] == [m[0] for m in MIGRATIONS]
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
