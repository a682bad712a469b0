"""No secret leaves the app: the passwords of DATABASE_URL and REDIS_URL (the local stack's
have real, random passwords) and the URLs themselves appear nowhere a user, a scraper or a log
shipper can read: not in /api/config, /metrics, /openapi.json, /docs, any other answer or
header, nor in any log line, after traffic that includes validation errors, conflicts, 404s,
injected 500s, live fault changes and a rejected fault configuration. The same holds when the
passwords are wrong (the start-up and degraded paths log connection errors)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
from kubernetes import client

from payflow.naming import faults_configmap_name
from tests.integration.app.conftest import AppServer, StartApp
from tests.support import wait_for

PAYMENT = {
    "amount": "12.50",
    "currency": "EUR",
    "merchant_ref": "m_1001",
    "customer_ref": "c_2002",
    "card_token": "tok_visa_4242",
}
# What an outsider may read without credentials (every route of the app that needs no input).
PAGES = ("/api/config", "/metrics", "/openapi.json", "/docs", "/ready", "/health", "/api/stats", "/")


def secrets_of(*urls: str) -> dict[str, str]:
    """Each URL, its password, and the URL without the password's redaction: what must not leak."""
    found: dict[str, str] = {}
    for url in urls:
        parts = urlsplit(url)
        assert parts.password, f"{parts.scheme} URL without a password: the test would prove nothing"
        assert len(parts.password) >= 12
        found[f"{parts.scheme} password"] = parts.password
        found[f"{parts.scheme} URL"] = url
        netloc = f"{parts.username or ''}:{parts.password}@"
        found[f"{parts.scheme} credentials"] = netloc
    return found


def leaks(text: str, secrets: dict[str, str]) -> list[str]:
    return [name for name, secret in secrets.items() if secret in text]


def _with_password(url: str, password: str) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:{password}@{host}"))


def _everything_readable(app: AppServer, extra: list[httpx.Response]) -> dict[str, str]:
    """Every page and response body and header seen, and the log, by where it came from."""
    seen: dict[str, str] = {}
    for path in PAGES:
        r = app.client.get(path)
        seen[f"GET {path} ({r.status_code})"] = r.text + json.dumps(dict(r.headers))
    for n, r in enumerate(extra):
        seen[f"response {n} {r.request.method} {r.request.url.path} ({r.status_code})"] = r.text + json.dumps(
            dict(r.headers)
        )
    seen["log"] = app.log
    return seen


def _traffic(app: AppServer) -> list[httpx.Response]:
    """Successes and every kind of error the API answers."""
    c = app.client
    key = uuid.uuid4().hex
    out = [
        c.post("/api/transactions", json=PAYMENT, headers={"Idempotency-Key": key}),
        c.post("/api/transactions", json=PAYMENT, headers={"Idempotency-Key": key}),  # replay
        c.post("/api/transactions", json={**PAYMENT, "amount": "13"}, headers={"Idempotency-Key": key}),
        c.post("/api/transactions", json={**PAYMENT, "amount": 1.5}, headers={"Idempotency-Key": "k2"}),
        c.post("/api/transactions", content=b"{not json", headers={"Idempotency-Key": "k3"}),
        c.post("/api/transactions", json=PAYMENT),  # no key
        c.post("/api/transactions", content=b"x" * 40_000, headers={"Idempotency-Key": "k4"}),  # 413
        c.get("/api/transactions", params={"cursor": "garbage"}),
        c.get(f"/api/transactions/{uuid.uuid4()}"),
        c.get("/api/transactions", params={"limit": 5}),
        c.get("/api/faults/history", params={"release": "*"}),
        c.get("/nope"),
        c.delete("/api/config"),
    ]
    created = out[0].json()
    out.append(c.get(f"/api/transactions/{created['id']}"))
    return out


def test_no_secret_in_any_output_after_traffic_errors_and_fault_changes(
    start_app: StartApp,
    kube_api: object,
    kubeconfig: Path,
    namespace: str,
    postgres_url: str,
    redis_url: str,
) -> None:
    secrets = secrets_of(postgres_url, redis_url)
    core = client.CoreV1Api(kube_api)
    release = "shop"
    cm = faults_configmap_name(release)
    core.create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name=cm), data={"INJECT_LATENCY_MS": "0"})
    )
    app = start_app(
        {"KUBECONFIG": str(kubeconfig), "PAYFLOW_NAMESPACE": namespace, "PAYFLOW_WATCH_FAULTS": "true"},
        release=release,
    )
    wait_for(lambda: app.client.get("/api/config").json()["configmap"]["connected"], 10, "the watch")

    responses = _traffic(app)
    statuses = {r.status_code for r in responses}
    assert {200, 201, 400, 404, 405, 409, 413, 422} <= statuses, statuses

    def patch(data: dict[str, Any]) -> None:
        core.patch_namespaced_config_map(cm, namespace, {"data": data})

    def config() -> dict[str, Any]:
        body: dict[str, Any] = app.client.get("/api/config").json()
        return body

    # live fault changes: on (500s), rejected, off
    patch({"INJECT_ERROR_RATE": "1.0"})
    wait_for(lambda: config()["faults"]["errorRate"]["active"], 5, "the error rate in force")
    injected = [app.client.get("/api/transactions") for _ in range(5)]
    assert {r.status_code for r in injected} == {500}
    patch({"INJECT_ERROR_RATE": "lots"})
    wait_for(lambda: config()["last_rejected"], 5, "the bad value rejected")
    patch({"INJECT_ERROR_RATE": "0"})
    wait_for(lambda: not config()["faults"]["errorRate"]["active"], 5, "the error rate off")
    responses += injected

    settings = config()["settings"]
    assert "***" in settings["database_url"]
    assert "***" in settings["redis_url"]

    seen = _everything_readable(app, responses)
    assert "injected_error" in seen["log"]  # the log did record the errors it was meant to
    assert "rejected fault configuration" in seen["log"]
    found = {where: leaks(text, secrets) for where, text in seen.items()}
    assert {where: names for where, names in found.items() if names} == {}
    assert len(seen) >= len(PAGES) + len(responses) + 1


def test_wrong_passwords_are_not_logged_either(
    start_app: StartApp, postgres_url: str, redis_url: str
) -> None:
    # Redis refusing the password: the app serves, degraded, and says why.
    wrong_redis = _with_password(redis_url, f"wrong-{uuid.uuid4().hex}")
    degraded = start_app({"REDIS_URL": wrong_redis})
    ready = wait_for(
        lambda: (r := degraded.client.get("/ready")).json()["status"] == "degraded" and r, 10, "degraded"
    )
    assert "reason" in ready.json()["checks"]["redis"]
    seen = _everything_readable(degraded, _traffic(degraded))
    assert "redis" in seen["log"]  # the outage was logged
    found = {w: leaks(t, secrets_of(wrong_redis, redis_url, postgres_url)) for w, t in seen.items()}
    assert {w: n for w, n in found.items() if n} == {}

    # PostgreSQL refusing the password: the app keeps retrying at start, and logs why.
    wrong_db = _with_password(postgres_url, f"wrong-{uuid.uuid4().hex}")
    failing = start_app({"DATABASE_URL": wrong_db}, wait=False)

    def logged() -> str | None:
        text = failing.log
        return text if "password authentication failed" in text else None

    log = wait_for(logged, 20, "the authentication failure in the log")
    assert leaks(log, secrets_of(wrong_db, postgres_url)) == []
