"""ASGI middleware that refuses oversized requests before the app reads them."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tasks_service.web.refusals import refuse

MAX_HEADER_BYTES = 16 * 1024
_CLOSE = ((b"connection", b"close"),)  # the rest of such a request is not read


class RequestLimits:
    """431 for headers over 16 KiB in all; 413 for a body over the route's limit.

    `body_limit(path)` gives the largest body a path accepts. A declared Content-Length is
    checked at once; a streamed body is counted as it is read.
    """

    def __init__(self, app: ASGIApp, body_limit: Callable[[str], int]) -> None:
        self.app = app
        self.body_limit = body_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = scope["headers"]
        if sum(len(name) + len(value) for name, value in headers) > MAX_HEADER_BYTES:
            await refuse(
                send, 431, f"request headers exceed {MAX_HEADER_BYTES} bytes in all", _CLOSE
            )
            return
        limit = self.body_limit(scope["path"])
        too_large = f"request body exceeds the limit of {limit} bytes"
        for name, value in headers:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await refuse(send, 400, "Content-Length is not a number", _CLOSE)
                    return
                if declared > limit:
                    await refuse(send, 413, too_large, _CLOSE)
                    return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise HTTPException(413, too_large)
            return message

        await self.app(scope, counting_receive, send)
