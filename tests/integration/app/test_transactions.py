"""HTTP semantics of the transactions API, in-process on the real PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import psycopg
import pytest

from payflow.app.main import create_app
from tests.integration.app.conftest import in_process_settings

GOOD: dict[str, Any] = {
    "amount": "12.50",
    "currency": "EUR",
    "merchant_ref": "m_1001",
    "customer_ref": "c_2002",
    "card_token": "tok_visa_4242",
}


def _key() -> dict[str, str]:
    return {"Idempotency-Key": uuid.uuid4().hex}


def _count(postgres_url: str) -> int:
    with psycopg.connect(postgres_url) as conn:
        row = conn.execute("SELECT count(*) FROM transactions").fetchone()
    assert row is not None
    return int(row[0])


async def test_create_get_and_processing_rules(asgi_client: httpx.AsyncClient) -> None:
    cases = [
        ({}, "authorized", None),
        ({"card_token": "tok_decline_0001"}, "declined", "card_declined"),
        ({"card_token": "tok_insufficient_1"}, "declined", "insufficient_funds"),
        ({"card_token": "tok_fail_0001"}, "failed", "processor_unavailable"),
        ({"amount": "10000.01", "currency": "USD"}, "declined", "limit_exceeded"),
    ]
    for change, status, reason in cases:
        r = await asgi_client.post("/api/transactions", json=GOOD | change, headers=_key())
        assert r.status_code == 201, r.text
        tx = r.json()
        assert (tx["status"], tx["decline_reason"]) == (status, reason)
        one = await asgi_client.get(f"/api/transactions/{tx['id']}")
        assert one.status_code == 200
        assert [e["status"] for e in one.json()["events"]] == ["pending", status]
        again = await asgi_client.get(f"/api/transactions/{tx['id']}")
        assert again.headers["x-cache"] == "hit"
        assert again.json() == one.json()
    jpy = await asgi_client.post(
        "/api/transactions", json=GOOD | {"amount": 1500, "currency": "JPY"}, headers=_key()
    )
    assert jpy.json()["amount"] == "1500"
    bhd = await asgi_client.post(
        "/api/transactions", json=GOOD | {"amount": "1.5", "currency": "BHD"}, headers=_key()
    )
    assert bhd.json()["amount"] == "1.500"


async def test_fifty_concurrent_posts_with_one_key_leave_one_row(
    asgi_client: httpx.AsyncClient, postgres_url: str
) -> None:
    key = uuid.uuid4().hex
    responses = await asyncio.gather(
        *(
            asgi_client.post("/api/transactions", json=GOOD, headers={"Idempotency-Key": key})
            for _ in range(50)
        )
    )
    assert {r.status_code for r in responses} == {201}
    assert len({r.content for r in responses}) == 1
    assert sum(r.headers["idempotent-replayed"] == "false" for r in responses) == 1
    with psycopg.connect(postgres_url) as conn:
        row = conn.execute("SELECT count(*) FROM transactions WHERE idempotency_key = %s", (key,)).fetchone()
    assert row == (1,)
    # the same key with another body: 409; the same meaning spelled differently: a replay
    other = await asgi_client.post(
        "/api/transactions", json=GOOD | {"amount": "13.00"}, headers={"Idempotency-Key": key}
    )
    assert other.status_code == 409
    assert other.json()["error"]["code"] == "idempotency_key_reused"
    same = await asgi_client.post(
        "/api/transactions", json=GOOD | {"amount": "12.5"}, headers={"Idempotency-Key": key}
    )
    assert same.status_code == 201
    assert same.content == responses[0].content


BAD_POSTS: list[tuple[str, Any, dict[str, str] | None, int]] = [
    ("negative amount", GOOD | {"amount": "-5.00"}, None, 422),
    ("zero amount", GOOD | {"amount": "0"}, None, 422),
    ("over-precise amount", GOOD | {"amount": "1.001"}, None, 422),
    ("decimals on JPY", GOOD | {"amount": "10.5", "currency": "JPY"}, None, 422),
    ("float amount", GOOD | {"amount": 12.5}, None, 422),
    ("not a number", GOOD | {"amount": "twelve"}, None, 422),
    ("infinite amount", GOOD | {"amount": "Infinity"}, None, 422),
    ("huge amount", GOOD | {"amount": "1e30"}, None, 422),
    ("unknown currency", GOOD | {"currency": "XYZ"}, None, 422),
    ("lower-case currency", GOOD | {"currency": "eur"}, None, 422),
    ("raw card number", GOOD | {"card_token": "4242424242424242"}, None, 422),
    ("card number with spaces", GOOD | {"card_token": "tok_4111 1111 1111 1111"}, None, 422),
    ("card number in description", GOOD | {"description": "card 5555555555554444"}, None, 422),
    ("bad token", GOOD | {"card_token": "visa"}, None, 422),
    ("missing field", {k: v for k, v in GOOD.items() if k != "merchant_ref"}, None, 422),
    ("wrong type", GOOD | {"merchant_ref": 42}, None, 422),
    ("unknown field", GOOD | {"pan": "x"}, None, 422),
    ("not an object", ["x"], None, 422),
    ("missing Idempotency-Key", GOOD, {}, 422),
    ("oversize body", GOOD | {"description": "x" * 20000}, None, 413),
]


@pytest.mark.parametrize(("what", "body", "headers", "status"), BAD_POSTS, ids=[b[0] for b in BAD_POSTS])
async def test_bad_input_is_a_4xx_json_error_and_writes_nothing(
    asgi_client: httpx.AsyncClient,
    postgres_url: str,
    what: str,
    body: Any,
    headers: dict[str, str] | None,
    status: int,
) -> None:
    before = _count(postgres_url)
    r = await asgi_client.post("/api/transactions", json=body, headers=_key() if headers is None else headers)
    assert r.status_code == status, f"{what}: {r.status_code} {r.text}"
    error = r.json()["error"]
    assert set(error) == {"code", "message", "details", "requestId"}
    assert error["message"]
    assert _count(postgres_url) == before


async def test_a_chunked_oversize_body_is_a_413(asgi_client: httpx.AsyncClient, postgres_url: str) -> None:
    before = _count(postgres_url)

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"amount": "1.00", "currency": "EUR", "merchant_ref": "m", "customer_ref": "c", '
        yield b'"card_token": "tok_visa_4242", "description": "' + b"x" * 20000 + b'"}'

    r = await asgi_client.post("/api/transactions", content=chunks(), headers=_key())
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "payload_too_large"
    assert _count(postgres_url) == before


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ({"cursor": "not-a-cursor"}, "invalid_cursor"),
        ({"limit": "0"}, "validation_error"),
        ({"limit": "many"}, "validation_error"),
        ({"status": "lost"}, "validation_error"),
        ({"currency": "XYZ"}, "invalid_filter"),
        ({"created_from": "yesterday"}, "validation_error"),
    ],
)
async def test_bad_list_queries(asgi_client: httpx.AsyncClient, query: dict[str, str], code: str) -> None:
    r = await asgi_client.get("/api/transactions", params=query)
    assert 400 <= r.status_code < 500
    assert r.json()["error"]["code"] == code


async def test_cursor_pagination_and_filters(asgi_client: httpx.AsyncClient) -> None:
    merchant = f"m_{uuid.uuid4().hex[:8]}"
    created = []
    for i in range(7):
        r = await asgi_client.post(
            "/api/transactions",
            json=GOOD | {"merchant_ref": merchant, "currency": "SEK", "amount": f"{i + 1}.00"},
            headers=_key(),
        )
        created.append(r.json())
    first = created[0]["created_at"]
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": "3", "currency": "SEK", "created_from": first}
        if cursor:
            params["cursor"] = cursor
        page = (await asgi_client.get("/api/transactions", params=params)).json()
        seen += [t["id"] for t in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [t["id"] for t in reversed(created)]
    declined = (
        await asgi_client.get("/api/transactions", params={"status": "declined", "limit": 200})
    ).json()
    assert all(t["status"] == "declined" for t in declined["items"])
    missing = await asgi_client.get(f"/api/transactions/{uuid.uuid4()}")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    bad_id = await asgi_client.get("/api/transactions/not-a-uuid")
    assert bad_id.status_code == 422


async def test_stats_are_cached_and_openapi_is_served(asgi_client: httpx.AsyncClient) -> None:
    await asgi_client.post("/api/transactions", json=GOOD, headers=_key())
    first = await asgi_client.get("/api/stats")
    assert first.status_code == 200
    stats = first.json()
    assert stats["transactions"]["by_currency"]["EUR"]["count"] >= 1
    assert {w["seconds"] for w in stats["requests"]["windows"]} == {60, 300}
    assert first.headers["x-cache"] == "miss"
    second = await asgi_client.get("/api/stats")
    assert second.headers["x-cache"] in ("local", "hit")
    assert second.content == first.content
    assert (await asgi_client.get("/docs")).status_code == 200
    spec = (await asgi_client.get("/openapi.json")).json()
    assert "/api/transactions" in spec["paths"]
    metrics = (await asgi_client.get("/metrics")).text
    for name in (
        "payflow_http_requests_total",
        "payflow_http_request_duration_seconds_bucket",
        "payflow_transactions_total",
        "payflow_db_pool_size",
        "payflow_db_write_batch_size_bucket",
        "payflow_cache_hits_total",
        "payflow_fault_active",
        "process_cpu_seconds_total",
    ):
        assert name in metrics


async def test_stats_refreshing_serve_the_expired_copy_instead_of_queueing(
    postgres_url: str, redis_url: str
) -> None:
    # The replica's copy expires at once: the next request refreshes it.
    settings = in_process_settings(postgres_url, redis_url, stats_local_ttl_s=0)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://payflow.test") as client:
            first = await client.get("/api/stats")
            assert first.headers["x-cache"] == "miss"
            copy = app.state.services.stats_cache
            async with copy.lock:  # another request is refreshing it
                during = await client.get("/api/stats")
            after = await client.get("/api/stats")
    assert (during.status_code, during.headers["x-cache"]) == (200, "stale")
    assert during.content == first.content
    assert after.headers["x-cache"] == "hit"  # from Redis once the refresh is done
