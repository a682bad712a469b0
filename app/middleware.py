"""One pure ASGI middleware around every request: request id, body limit, the per-request
fault injectors (on /api/* only), metrics, the stats window and the JSON log line."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

from starlette.exceptions import HTTPException
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from payflow.app import logs, metrics
from payflow.app.errors import error_body
from payflow.app.faults import injectors
from payflow.app.services import Services

log = logging.getLogger("payflow.app.http")

API_PREFIX = "/api/"
# The introspection endpoints stay readable during an incident: they are how an operator (or an
# RCA tool) sees what is in force. Faults that break the process or the pool still reach them.
# Neither they nor the dashboard's series count as traffic in /api/stats and the series: a dashboard
# polling them would dilute the error ratio that a fault sets.
SPARED = ("/api/config", "/api/faults/", "/api/stats/series")
PROCESS_WIDE = ("cpuBurn", "dbTimeout")  # in force for the whole process: they touch every API request


class _BodyTooLargeError(HTTPException):
    """Raised from ``receive`` while the app reads a body over the limit (a chunked body has
    no Content-Length to check first). FastAPI passes HTTPExceptions through its body parsing,
    so the app's handler answers it as a JSON 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body over {limit} bytes")


class RequestMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        services: Callable[[], Services | None],
        routes: Callable[[], Sequence[BaseRoute]] = tuple,
    ) -> None:
        self.app = app
        self.services = services
        self.routes = routes
        self.rng = random.Random()

    def _template(self, scope: Scope) -> str:
        """The route template of a request the router did not see (answered by the middleware:
        an injected error, a 413), so metric labels stay bounded."""
        for route in self.routes():
            match, _ = route.matches(scope)
            if match is Match.FULL:
                return str(getattr(route, "path", None) or "<unmatched>")
        return "<unmatched>"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        svc = self.services()
        start = time.perf_counter()
        headers = dict(scope.get("headers") or [])
        rid = headers.get(b"x-request-id", b"").decode("latin-1")[:64]
        if not (rid.isascii() and rid.isprintable() and rid.strip()):
            rid = os.urandom(16).hex()  # what uuid4().hex is made of, without the UUID object
        scope.setdefault("state", {})["request_id"] = rid
        path: str = scope["path"]
        method: str = scope["method"]
        is_api = path.startswith(API_PREFIX)
        status = 500
        touched: list[str] = []
        extra: dict[str, Any] = {}

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode())]
            await send(message)

        async def reply(code: int, err: str, msg: str) -> None:
            body = json.dumps(error_body(err, msg, rid)).encode()
            await send_wrapper(
                {
                    "type": "http.response.start",
                    "status": code,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                    ],
                }
            )
            await send_wrapper({"type": "http.response.body", "body": body})

        limit = svc.settings.max_body_bytes if svc else 1 << 20
        received = 0

        async def receive_limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _BodyTooLargeError(limit)
            return message

        try:
            length = headers.get(b"content-length")
            if length is not None and length.isdigit() and int(length) > limit:
                await reply(413, "payload_too_large", f"request body over {limit} bytes")
            elif (
                is_api
                and svc is not None
                and not path.startswith(SPARED)
                and await self._inject(svc, touched, extra, method, path, reply)
            ):
                pass
            else:
                await self.app(scope, receive_limited, send_wrapper)
        except Exception:
            status = 500
            raise
        finally:
            duration = time.perf_counter() - start
            route_obj = scope.get("route")
            route = getattr(route_obj, "path", None) or self._template(scope)
            counter, histogram = metrics.http_request(route, method, status)
            counter.inc()
            histogram.observe(duration)
            if is_api and svc is not None and not path.startswith(SPARED):
                svc.window.add(duration, status >= 500)
            logs.emit(
                log,
                logging.ERROR if status >= 500 else logging.INFO,
                "%s %s %d",
                (method, path, status),
                {
                    "request_id": rid,
                    "method": method,
                    "route": route,
                    "path": path,
                    "status": status,
                    "duration_ms": round(duration * 1000, 3),
                    "faults": touched,
                    **extra,
                },
            )

    async def _inject(
        self,
        svc: Services,
        touched: list[str],
        extra: dict[str, Any],
        method: str,
        path: str,
        reply: Callable[[int, str, str], Any],
    ) -> bool:
        """Apply the per-request faults; True when the request was answered here."""
        active = svc.faults.active()
        if not active:
            return False
        touched.extend(name for name in PROCESS_WIDE if name in active)
        panic = active.get("panic")
        if panic is not None and injectors.chance(float(panic["probability"]), self.rng):
            touched.append("panic")
            injectors.crash(f"request {method} {path}")
        oom = active.get("oom")
        if oom is not None:
            touched.append("oom")
            svc.leak.grow(int(oom["growthKiBPerRequest"]) * 1024)
        latency = active.get("latency")
        if latency is not None:
            delay = injectors.latency_seconds(latency, self.rng)
            touched.append("latency")
            extra["injected_delay_ms"] = round(delay * 1000, 1)
            metrics.FAULT_INJECTIONS.labels("latency").inc()
            await asyncio.sleep(delay)
        error = active.get("errorRate")
        if error is not None and injectors.chance(float(error["ratio"]), self.rng):
            touched.append("errorRate")
            metrics.FAULT_INJECTIONS.labels("errorRate").inc()
            extra["error"] = "injected_error"
            await reply(500, "internal_error", "internal server error")
            return True
        return False
