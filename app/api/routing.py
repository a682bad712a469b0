"""A route class for the hot endpoints: ``async def endpoint(request: Request) -> Response``.

FastAPI's own handler resolves dependencies, validates parameters and serialises a response model
on every request, even for an endpoint that needs none of it. This class keeps everything an
``APIRoute`` declares (path, methods, OpenAPI: summary, ``openapi_extra``, ``response_model``,
``responses``) and replaces only the per-request handler (FastAPI's documented hook,
``get_route_handler``) with a direct call of the endpoint. Exceptions still go through the app's
exception handlers, so errors keep their one JSON shape.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute, APIRouter

Handler = Callable[[Request], Coroutine[Any, Any, Response]]


def check_request_only(endpoint: Callable[..., Any]) -> Handler:
    """``endpoint`` if it is a coroutine function of exactly one parameter annotated ``Request``;
    TypeError otherwise (found at import time, not at the first request)."""
    name = getattr(endpoint, "__qualname__", repr(endpoint))
    if not inspect.iscoroutinefunction(endpoint):
        raise TypeError(f"{name}: a request-only endpoint must be 'async def'")
    params = list(inspect.signature(endpoint, eval_str=True).parameters.values())
    if len(params) != 1 or params[0].annotation is not Request:
        raise TypeError(f"{name}: a request-only endpoint takes exactly one parameter, (request: Request)")
    handler: Handler = endpoint
    return handler


class RequestOnlyRoute(APIRoute):
    """An ``APIRoute`` whose endpoint reads the request itself (see the module docstring)."""

    def get_route_handler(self) -> Handler:
        return check_request_only(self.endpoint)


def request_only(
    router: APIRouter, path: str, *, methods: list[str], **kwargs: Any
) -> Callable[[Handler], Handler]:
    """Register the decorated ``async def endpoint(request: Request) -> Response`` on ``router``
    as a :class:`RequestOnlyRoute`; ``kwargs`` are ``add_api_route``'s (summary, status_code,
    response_model, openapi_extra...)."""

    def register(endpoint: Handler) -> Handler:
        router.add_api_route(path, endpoint, methods=methods, route_class_override=RequestOnlyRoute, **kwargs)
        return endpoint

    return register
