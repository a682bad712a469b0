"""Errors as JSON with one stable shape:

``{"error": {"code": "...", "message": "...", "details": [...], "requestId": "..."}}``
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from psycopg_pool import PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from payflow.app import metrics

log = logging.getLogger("payflow.app")


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, details: list[Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details or []


def error_body(
    code: str, message: str, request_id: str | None, details: list[Any] | None = None
) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details or [], "requestId": request_id}}


def error_response(
    request: Request | None, status: int, code: str, message: str, details: list[Any] | None = None
) -> JSONResponse:
    rid = request.scope.get("state", {}).get("request_id") if request is not None else None
    return JSONResponse(jsonable_encoder(error_body(code, message, rid, details)), status_code=status)


_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
}


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(request, exc.status, exc.code, exc.message, exc.details)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        details = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        msg = "; ".join(f"{'.'.join(str(p) for p in d['loc'])}: {d['msg']}" for d in details)
        return error_response(request, 422, "validation_error", msg or "invalid request", details)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
        return error_response(request, exc.status_code, code, str(exc.detail))

    @app.exception_handler(PoolTimeout)
    async def pool_timeout(request: Request, exc: PoolTimeout) -> JSONResponse:
        metrics.POOL_TIMEOUTS.inc()
        log.error("database pool exhausted: %s", exc, extra={"error": "db_pool_exhausted"})
        return error_response(
            request, 503, "db_pool_exhausted", "no database connection became free in time; try again later"
        )

    @app.exception_handler(psycopg.errors.QueryCanceled)
    async def query_canceled(request: Request, exc: psycopg.errors.QueryCanceled) -> JSONResponse:
        log.error("database statement timed out: %s", exc, extra={"error": "db_timeout"})
        return error_response(request, 504, "db_timeout", "the database did not answer in time")

    @app.exception_handler(psycopg.OperationalError)
    async def db_unavailable(request: Request, exc: psycopg.OperationalError) -> JSONResponse:
        log.error("database unavailable: %s", exc, extra={"error": "db_unavailable"})
        return error_response(request, 503, "db_unavailable", "the database is unavailable; try again later")

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error", exc_info=exc, extra={"error": "internal_error"})
        return error_response(request, 500, "internal_error", "internal server error")
