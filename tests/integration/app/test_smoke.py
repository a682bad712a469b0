from __future__ import annotations

import uuid

import httpx

from tests.integration.app.conftest import StartApp


async def test_in_process(asgi_client: httpx.AsyncClient) -> None:
    r = await asgi_client.post(
        "/api/transactions",
        json={"amount": "12.50", "currency": "EUR", "merchant_ref": "m1", "customer_ref": "c1", "card_token": "tok_visa_4242"},
        headers={"Idempotency-Key": uuid.uuid4().hex},
    )
    assert r.status_code == 201, r.text
    print(r.json())
    r = await asgi_client.get("/api/transactions?limit=1")
    print(r.json())
    r = await asgi_client.get("/api/stats")
    print(r.json())
    r = await asgi_client.get("/api/config")
    print(r.json())
    r = await asgi_client.get("/ready")
    print(r.json())


def test_process(start_app: StartApp) -> None:
    app = start_app({"INJECT_LATENCY_MS": "10"})
    r = app.client.get("/api/config")
    assert r.status_code == 200
    print(r.json())
    print(app.client.get("/api/faults/history").json())
    print(app.log[-2000:])
