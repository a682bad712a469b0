"""The hot endpoints: ``async def endpoint(request: Request) -> Response``, and a direct way to them.

FastAPI's own handler resolves dependencies, validates parameters and serialises a response model
on every request, even for an endpoint that needs none of it. :class:`RequestOnlyRoute` keeps
everything an ``APIRoute`` declares (path, methods, OpenAPI: summary, ``openapi_extra``,
``response_model``, ``responses``) and replaces only the per-request handler (FastAPI's documented
hook, ``get_route_handler``) with a direct call of the endpoint.

:class:`HotPath` goes one step further for such routes with a fixed path (``/health``,
``POST /api/transactions``, ``/api/stats``): a dictionary lookup on method and path finds the
endpoint, where the router would try every route's pattern in turn and then pass through
FastAPI's exception, exit-stack and request wrappers. Exceptions go to the app's own exception
handlers (the same ones, looked up the same way), so errors keep their one JSON shape. Any other
request takes the usual way.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute, APIRouter
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

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


ExceptionHandlers = Callable[[], Mapping[Any, Callable[..., Any]]]


class HotPath:
    """ASGI middleware: requests for a fixed-path :class:`RequestOnlyRoute` are answered by its
    endpoint directly (see the module docstring); everything else goes on to ``app``.

    ``exception_handlers`` gives the app's handlers (``FastAPI.exception_handlers``), read at
    each error so that handlers installed after this middleware count too.
    """

    def __init__(
        self, app: ASGIApp, routes: Sequence[BaseRoute], exception_handlers: ExceptionHandlers
    ) -> None:
        self.app = app
        self.exception_handlers = exception_handlers
        self.table: dict[tuple[str, str], RequestOnlyRoute] = {}
        for route in routes:
            if isinstance(route, RequestOnlyRoute) and not route.param_convertors:
                for method in route.methods or ():
                    self.table.setdefault((method, route.path), route)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = None
        if scope["type"] == "http" and not scope.get("root_path"):
            route = self.table.get((scope["method"], scope["path"]))
        if route is None:
            await self.app(scope, receive, send)
            return
        scope["route"] = route
        scope["endpoint"] = route.endpoint
        request = Request(scope, receive, send)
        try:
            response = await route.endpoint(request)
        except Exception as exc:
            handler = self._handler(exc)
            if handler is None:
                raise
            await (await handler(request, exc))(scope, receive, send)
            if handler is self.exception_handlers().get(Exception):
                raise  # as Starlette does after its 500 response: the server logs the failure
            return
        await response(scope, receive, send)

    def _handler(self, exc: Exception) -> Callable[..., Any] | None:
        handlers = self.exception_handlers()
        for cls in type(exc).__mro__:
            if cls in handlers:
                return handlers[cls]
        return None
