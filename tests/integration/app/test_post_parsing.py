"""POST /api/transactions reads its body and Idempotency-Key itself (the lean hot path): its
422s keep FastAPI's shape and locations, its OpenAPI entry still documents both, and nothing
is written on a refusal."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import psycopg
import pytest

GOOD: dict[str, Any] = {
    "amount": "12.50",
    "currency": "EUR",
    "merchant_ref": "m_1001",
    "customer_ref": "c_2002",
    "card_token": "tok_visa_4242",
}


def _count(postgres_url: str) -> int:
    with psycopg.connect(postgres_url) as conn:
        row = conn.execute("SELECT count(*) FROM transactions").fetchone()
    assert row is not None
    return int(row[0])


CASES: list[tuple[str, bytes, dict[str, str], list[list[str]]]] = [
    (
        "no key, bad amount",
        json.dumps(GOOD | {"amount": "-1"}).encode(),
        {},
        [["header", "Idempotency-Key"], ["body"]],
    ),
    (
        "key with a space",
        json.dumps(GOOD).encode(),
        {"Idempotency-Key": "a b"},
        [["header", "Idempotency-Key"]],
    ),
    (
        "key too long",
        json.dumps(GOOD).encode(),
        {"Idempotency-Key": "k" * 256},
        [["header", "Idempotency-Key"]],
    ),
    ("empty body", b"", {}, [["body"]]),
    ("invalid JSON", b'{"amount": "1.00",', {}, [["body"]]),
    ("text/plain body", json.dumps(GOOD).encode(), {"Content-Type": "text/plain"}, [["body"]]),
    ("wrong type", json.dumps(GOOD | {"merchant_ref": 42}).encode(), {}, [["body", "merchant_ref"]]),
    ("unknown field", json.dumps(GOOD | {"pan": "x"}).encode(), {}, [["body", "pan"]]),
]


@pytest.mark.parametrize(("what", "body", "headers", "locs"), CASES, ids=[c[0] for c in CASES])
async def test_refusals_name_header_and_body_like_fastapi(
    asgi_client: httpx.AsyncClient,
    postgres_url: str,
    what: str,
    body: bytes,
    headers: dict[str, str],
    locs: list[list[str]],
) -> None:
    before = _count(postgres_url)
    sent = {"Content-Type": "application/json"} | headers
    if "Idempotency-Key" not in headers and what != "no key, bad amount":
        sent["Idempotency-Key"] = uuid.uuid4().hex
    r = await asgi_client.post("/api/transactions", content=body, headers=sent)
    assert r.status_code == 422, f"{what}: {r.text}"
    error = r.json()["error"]
    assert error["code"] == "validation_error"
    assert error["requestId"] == r.headers["x-request-id"]
    got = [d["loc"] for d in error["details"]]
    for loc in locs:
        assert any(g[: len(loc)] == loc for g in got), f"{what}: {got}"
    assert _count(postgres_url) == before


async def test_a_json_suffix_content_type_is_json(asgi_client: httpx.AsyncClient) -> None:
    r = await asgi_client.post(
        "/api/transactions",
        content=json.dumps(GOOD).encode(),
        headers={"Content-Type": "application/merge-patch+json", "Idempotency-Key": uuid.uuid4().hex},
    )
    assert r.status_code == 201, r.text


async def test_openapi_documents_the_body_and_the_key(asgi_client: httpx.AsyncClient) -> None:
    spec = (await asgi_client.get("/openapi.json")).json()
    post = spec["paths"]["/api/transactions"]["post"]
    schema = post["requestBody"]["content"]["application/json"]["schema"]
    assert post["requestBody"]["required"] is True
    assert set(schema["required"]) == {"amount", "currency", "merchant_ref", "customer_ref", "card_token"}
    assert schema["additionalProperties"] is False
    (key,) = [p for p in post["parameters"] if p["name"] == "Idempotency-Key"]
    assert (key["in"], key["required"]) == ("header", True)
    assert key["schema"]["maxLength"] == 255
    assert "201" in post["responses"]
