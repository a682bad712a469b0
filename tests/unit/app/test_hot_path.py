"""The pieces of the lean request path: request-only routes and the hot path to them, cached
metric children, the request log line without the caller lookup."""

from __future__ import annotations

import json
import logging
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request, Response

from payflow.app import logs, metrics
from payflow.app.api.routing import HotPath, RequestOnlyRoute, check_request_only


async def _echo(request: Request) -> Response:
    return Response(request.headers.get("x-echo", "").encode(), status_code=202)


def _sync(request: Request) -> Response:
    return Response(b"")


async def _two(request: Request, other: int) -> Response:
    return Response(b"")


async def _untyped(request) -> Response:  # type: ignore[no-untyped-def]
    return Response(b"")


def test_a_request_only_endpoint_is_checked_when_the_route_is_made() -> None:
    assert check_request_only(_echo) is _echo
    for bad, why in ((_sync, "async def"), (_two, "exactly one"), (_untyped, "exactly one")):
        with pytest.raises(TypeError, match=why):
            check_request_only(bad)
        app = FastAPI()
        with pytest.raises(TypeError, match=why):
            app.router.add_api_route("/x", bad, route_class_override=RequestOnlyRoute)


async def test_a_request_only_route_calls_the_endpoint_and_keeps_its_openapi() -> None:
    app = FastAPI()
    app.router.add_api_route(
        "/echo",
        _echo,
        methods=["POST"],
        summary="Echo",
        openapi_extra={"requestBody": {"content": {"application/json": {"schema": {"type": "object"}}}}},
        route_class_override=RequestOnlyRoute,
    )
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        r = await client.post("/echo", headers={"x-echo": "hi"})
        assert (r.status_code, r.text) == (202, "hi")
        assert (await client.get("/echo")).status_code == 405
        op = (await client.get("/openapi.json")).json()["paths"]["/echo"]["post"]
    assert op["summary"] == "Echo"
    assert op["requestBody"]["content"]["application/json"]["schema"] == {"type": "object"}


class _Refused(Exception):
    pass


def _hot_app(seen: list[str]) -> FastAPI:
    """An app with request-only routes (fixed and templated paths) behind a HotPath, and a plain
    middleware outside it that records what the routing left in the scope."""
    app = FastAPI()

    async def fixed(request: Request) -> Response:
        if request.headers.get("x-fail") == "refused":
            raise _Refused("no")
        if request.headers.get("x-fail") == "bug":
            raise RuntimeError("a bug")
        return Response(b"fixed", status_code=201)

    async def templated(request: Request) -> Response:
        return Response(request.path_params["name"].encode())

    async def refused(request: Request, exc: Exception) -> Response:
        return Response(b'{"error":"refused"}', status_code=409, media_type="application/json")

    async def unexpected(request: Request, exc: Exception) -> Response:
        return Response(b'{"error":"internal"}', status_code=500, media_type="application/json")

    app.router.add_api_route("/fixed", fixed, methods=["POST"], route_class_override=RequestOnlyRoute)
    app.router.add_api_route("/t/{name}", templated, methods=["GET"], route_class_override=RequestOnlyRoute)
    app.add_exception_handler(_Refused, refused)
    app.add_exception_handler(Exception, unexpected)
    app.add_middleware(HotPath, routes=app.router.routes, exception_handlers=lambda: app.exception_handlers)

    class Record:
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            try:
                await self.inner(scope, receive, send)
            finally:
                if scope["type"] == "http":
                    seen.append(getattr(scope.get("route"), "path", "<none>"))

    app.add_middleware(Record)
    return app


async def test_the_hot_path_answers_fixed_paths_like_the_router_would() -> None:
    seen: list[str] = []
    app = _hot_app(seen)
    hot = HotPath(app.router, app.router.routes, lambda: app.exception_handlers)
    assert set(hot.table) == {("POST", "/fixed")}  # a templated path is left to the router
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        ok = await client.post("/fixed")
        assert (ok.status_code, ok.text) == (201, "fixed")
        refused = await client.post("/fixed", headers={"x-fail": "refused"})
        assert (refused.status_code, refused.json()) == (409, {"error": "refused"})
        bug = await client.post("/fixed", headers={"x-fail": "bug"})
        assert (bug.status_code, bug.json()) == (500, {"error": "internal"})
        assert (await client.get("/fixed")).status_code == 405  # another method: the router's answer
        assert (await client.get("/t/abc")).text == "abc"
    # the route is in the scope for the middleware outside (metric labels), whichever way it went
    assert seen == ["/fixed", "/fixed", "/fixed", "/fixed", "/t/{name}"]


def test_cached_metric_children_are_the_labelled_children() -> None:
    counter, histogram = metrics.http_request("/test/hot-path", "GET", 200)
    assert metrics.http_request("/test/hot-path", "GET", 200) == (counter, histogram)
    assert counter is metrics.HTTP_REQUESTS.labels("/test/hot-path", "GET", "200")
    assert histogram is metrics.HTTP_DURATION.labels("/test/hot-path", "GET")
    child = metrics.transactions("authorized", "XTS")
    assert child is metrics.TRANSACTIONS.labels("authorized", "XTS")


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logs.JsonFormatter())
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))


def test_the_request_line_is_the_line_logger_log_writes() -> None:
    logger = logging.getLogger("payflow.test.hot_path")
    logger.propagate = False
    capture = _Capture()
    logger.addHandler(capture)
    logger.setLevel(logging.INFO)
    try:
        extra = {"request_id": "r1", "status": 201, "faults": ["latency"], "injected_delay_ms": 5.0}
        logs.emit(logger, logging.INFO, "%s %s %d", ("POST", "/api/transactions", 201), extra)
        logger.log(logging.INFO, "%s %s %d", "POST", "/api/transactions", 201, extra=extra)
        logs.emit(logger, logging.DEBUG, "not %s", ("logged",), {})
    finally:
        logger.removeHandler(capture)
    assert len(capture.lines) == 2
    emitted, logged = ({k: v for k, v in line.items() if k != "ts"} for line in capture.lines)
    assert emitted == logged
    assert emitted["msg"] == "POST /api/transactions 201"
    assert emitted["faults"] == ["latency"]
