"""`http_request`: call a webhook or an HTTP service, retrying what a retry can fix."""

from __future__ import annotations

import asyncio
import re
import socket
from typing import Annotated, Any, Literal

import httpx
from pydantic import AfterValidator, AnyHttpUrl, BeforeValidator, Field, JsonValue

from tasks import Context, PermanentError, task
from tasks.destinations import Allowlist, DestinationNotAllowed, guarded_client

BODY_LIMIT = 65536  # bytes of the response body kept in the result
_ERROR_SNIPPET = 200  # characters of a 4xx/5xx body quoted in the error

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def _header_name(name: str) -> str:
    if not _TOKEN.fullmatch(name):
        raise ValueError("a header name must be a non-empty HTTP token (no spaces, CR or LF)")
    return name


def _header_value(value: str) -> str:
    if any(c in value for c in "\r\n\0"):
        raise ValueError("a header value must not contain CR, LF or NUL")
    return value


def _upper(value: object) -> object:
    return value.upper() if isinstance(value, str) else value


HeaderName = Annotated[str, AfterValidator(_header_name)]
HeaderValue = Annotated[str, AfterValidator(_header_value)]
Method = Annotated[
    Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"], BeforeValidator(_upper)
]


class HTTPServerError(Exception):
    """A 5xx answer: the server may recover, so the runner retries it."""


@task(max_attempts=5)
async def http_request(
    ctx: Context,
    url: AnyHttpUrl,
    method: Method = "POST",
    json: JsonValue = None,
    headers: dict[HeaderName, HeaderValue] | None = None,
    timeout: Annotated[float, Field(gt=0, le=300)] = 30.0,
) -> dict[str, Any]:
    """Send one HTTP request; result `{"status_code", "headers", "body", "truncated"}`.

    Loopback, private, link-local and other internal destinations are refused, checked on
    the address connected to, unless TASKS_HTTP_ALLOW allows them: the task fails at once
    and nothing is sent. Redirects are not followed: a 3xx is a result, its `Location` in
    `headers`, so a request never lands somewhere its caller did not name. Connection
    errors, timeouts and 5xx answers raise and are retried with backoff; a 4xx is final
    (PermanentError). The body is read streaming and cut at 64 KiB, then decoded as text
    (errors replaced). `timeout` bounds the whole request, body included.
    """
    target = str(url)
    allowlist = Allowlist.parse(ctx.services.settings.http_allow if ctx.services else ())
    sent_headers = dict(headers or {})
    if not any(name.lower() == "accept-encoding" for name in sent_headers):
        sent_headers["Accept-Encoding"] = "identity"  # so the 64 KiB cap is on real bytes
    try:
        async with (
            asyncio.timeout(timeout),
            guarded_client(allowlist, timeout=timeout) as client,
            client.stream(method, target, json=json, headers=sent_headers) as response,
        ):
            body, truncated = await _read_capped(response)
    except DestinationNotAllowed as exc:
        raise DestinationNotAllowed(f"{exc}: {target}") from None
    except TimeoutError:
        raise TimeoutError(f"timed out after {timeout:g} s: no full answer from {target}") from None
    except httpx.TimeoutException as exc:
        raise TimeoutError(
            f"timed out after {timeout:g} s {_timeout_phase(exc)}: {target}"
        ) from None
    except httpx.TransportError as exc:
        raise ConnectionError(f"{_describe(exc)}: {target}") from None
    text = body.decode(_encoding(response), errors="replace")
    if response.status_code >= 400:
        error = f"{response.status_code} {response.reason_phrase} from {target}"
        if text.strip():
            error += f": {text[:_ERROR_SNIPPET]}"
        raise (HTTPServerError if response.status_code >= 500 else PermanentError)(error)
    return {
        "status_code": response.status_code,
        "headers": dict(response.headers.items()),
        "body": text,
        "truncated": truncated,
    }


async def _read_capped(response: httpx.Response) -> tuple[bytes, bool]:
    """At most BODY_LIMIT bytes of the body; the rest is never read, so never held."""
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > BODY_LIMIT:
            return bytes(body[:BODY_LIMIT]), True
    return bytes(body), False


def _encoding(response: httpx.Response) -> str:
    try:
        return response.encoding or "utf-8"
    except LookupError:
        return "utf-8"


def _timeout_phase(exc: httpx.TimeoutException) -> str:
    return {
        httpx.ConnectTimeout: "connecting",
        httpx.ReadTimeout: "waiting for the answer",
        httpx.WriteTimeout: "sending the request",
        httpx.PoolTimeout: "waiting for a connection",
    }.get(type(exc), "in the request")


def _describe(exc: httpx.TransportError) -> str:
    """What went wrong, in words: anyio hides a refused connect behind a generic OSError."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ConnectionRefusedError):
            return "connection refused"
        if isinstance(seen, socket.gaierror):
            return f"cannot resolve the host name: {seen}"
        seen = seen.__cause__ or seen.__context__
    kind = "cannot connect" if isinstance(exc, httpx.ConnectError) else "connection failed"
    return f"{kind}: {exc}"
