"""Security headers on every answer, as ASGI middleware (the outermost: refusals get them too).

What OWASP's REST cheat sheet asks of an API read by browsers: the type as declared
(`nosniff`), never framed, no referrer, and API answers kept out of caches (a task's result
may be private). A header the route set itself (the dashboard's strict CSP and its
`no-cache`) is left as it is. No HSTS: the service speaks plain HTTP; the TLS proxy in front
of it is the one to send it.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

_EVERY_ANSWER = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
)
# Not HTML: nothing in it may load or run anything, nor be framed. HTML without a policy of
# its own (the interactive docs, which load their scripts from a CDN): not framed, at least.
_CSP_API = b"default-src 'none'; frame-ancestors 'none'"
_CSP_HTML = b"frame-ancestors 'none'"
_CACHEABLE_PREFIXES = ("/static/",)  # the dashboard's files: validated by ETag, not stored


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cacheable = scope["path"].startswith(_CACHEABLE_PREFIXES)

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                message = {**message, "headers": headers + _missing(headers, cacheable)}
            await send(message)

        await self.app(scope, receive, sending)


def _missing(headers: list[tuple[bytes, bytes]], cacheable: bool) -> list[tuple[bytes, bytes]]:
    present = {name.lower(): value for name, value in headers}
    added = [(name, value) for name, value in _EVERY_ANSWER if name not in present]
    if b"content-security-policy" not in present:
        html = present.get(b"content-type", b"").startswith(b"text/html")
        added.append((b"content-security-policy", _CSP_HTML if html else _CSP_API))
    if b"cache-control" not in present and not cacheable:
        added.append((b"cache-control", b"no-store"))
    return added
