"""Bearer-token auth for the whole app, as ASGI middleware: one header check per request.

Two tokens: TASKS_API_TOKEN may do everything, TASKS_READ_TOKEN only read (GET and HEAD;
anything else is a 403). Each answer to a guarded request says which it was in
`X-Tasks-Access` (`read-write` or `read-only`), so the dashboard can hide what it may not do.
"""

from __future__ import annotations

import hashlib
import secrets

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tasks_service.web.refusals import refuse

# Open without a token: the health check, and the dashboard page with its files (the API
# calls the page makes do need the token).
OPEN_PATHS = frozenset({"/health", "/"})
OPEN_PREFIXES = ("/static/",)
READ_METHODS = frozenset({"GET", "HEAD"})
ACCESS_HEADER = b"x-tasks-access"

_UNAUTHORIZED = "missing or wrong bearer token"
_READ_ONLY = "this bearer token is read-only: only GET requests are allowed with it"


def _digest(token: str | bytes) -> bytes:
    """Tokens are compared as SHA-256 digests: equal length, so the time tells nothing."""
    return hashlib.sha256(token.encode() if isinstance(token, str) else token).digest()


class BearerTokenAuth:
    """With TASKS_API_TOKEN set, every other request needs `Authorization: Bearer <token>`."""

    def __init__(self, app: ASGIApp, token: str, read_token: str | None = None) -> None:
        self.app = app
        self.admin = _digest(token)
        # Without a read token, one no request can give, so both comparisons always run.
        self.reader = _digest(read_token) if read_token else _digest(secrets.token_bytes(32))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or is_open(scope["path"]):
            await self.app(scope, receive, send)
            return
        given = _digest(_bearer_credentials(scope))
        is_admin = secrets.compare_digest(given, self.admin)
        is_reader = secrets.compare_digest(given, self.reader)
        if is_admin or (is_reader and scope["method"] in READ_METHODS):
            access = b"read-write" if is_admin else b"read-only"
            await self.app(scope, receive, _with_header(send, ACCESS_HEADER, access))
        elif is_reader:
            await refuse(send, 403, _READ_ONLY, ((ACCESS_HEADER, b"read-only"),))
        else:
            await refuse(send, 401, _UNAUTHORIZED, ((b"www-authenticate", b"Bearer"),))


def _bearer_credentials(scope: Scope) -> bytes:
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, credentials = value.partition(b" ")
            if scheme.lower() == b"bearer":  # the scheme's name is case-insensitive
                return bytes(credentials.strip())
            return b""
    return b""


def _with_header(send: Send, name: bytes, value: bytes) -> Send:
    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", ()), (name, value)]}
        await send(message)

    return sending


def is_open(path: str) -> bool:
    """Whether `path` is served without a token."""
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)
