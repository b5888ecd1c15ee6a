"""POST /tasks, the hot route, answered without FastAPI's router, as ASGI middleware.

The route reads its own body and builds its own answer, so what the router does for every
request (match the path against every route, solve dependencies, run the endpoint through
its wrappers) is work it does not need. This middleware, inside the token check and the
size limits, hands `POST /tasks` straight to the same route function and maps its errors
with the app's own exception handlers; every other request goes on as usual. The route
stays declared on its router, so the OpenAPI document is unchanged.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

Endpoint = Callable[[Request], Awaitable[Response]]


class FastPath:
    def __init__(self, app: ASGIApp, method: str, path: str, endpoint: Endpoint) -> None:
        self.app = app
        self.method = method
        self.path = path
        self.endpoint = endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != self.path or scope["method"] != self.method:
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive, send)
        try:
            response = await self.endpoint(request)
        except Exception as exc:
            handler = _handler_for(request, exc)
            if handler is None:
                raise
            response = await handler(request, exc)
        await response(scope, receive, send)


def _handler_for(request: Request, exc: Exception) -> Callable[..., Awaitable[Response]] | None:
    """The app's own handler for `exc` (the nearest class it has one for)."""
    handlers = request.app.exception_handlers
    for cls in type(exc).__mro__:
        if cls in handlers:
            handler: Callable[..., Awaitable[Response]] = handlers[cls]
            return handler
    return None
