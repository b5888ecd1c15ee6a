"""`send_email`: send one message through the SMTP server in TASKS_SMTP_URL."""

from __future__ import annotations

import smtplib
import ssl
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, parseaddr
from typing import Annotated, Any
from urllib.parse import parse_qs, unquote, urlsplit

from pydantic import AfterValidator, Field, StringConstraints

from tasks import Context, PermanentError, task

SOCKET_TIMEOUT = 30.0  # seconds for connecting and for each SMTP reply

# Deliberately simple: one local part, one domain, nothing a header could be bent with.
_ATOM = r"[^@\s<>(),;:\"\[\]\\]+"
Address = Annotated[str, StringConstraints(pattern=f"^{_ATOM}@{_ATOM}$", max_length=254)]


def _one_line(value: str) -> str:
    if "\r" in value or "\n" in value:
        raise ValueError("must not contain CR or LF (header injection)")
    return value


Subject = Annotated[str, AfterValidator(_one_line), Field(max_length=998)]


class SMTPTemporaryError(Exception):
    """A 4xx reply: the server asks to try again later, so the runner retries."""


@dataclass(frozen=True, slots=True)
class _Server:
    host: str
    port: int
    implicit_tls: bool
    starttls: bool
    user: str | None
    password: str | None = field(default=None, repr=False)  # never logged, never shown


@task(max_attempts=3)
def send_email(
    ctx: Context,
    to: Address | Annotated[list[Address], Field(min_length=1, max_length=100)],
    subject: Subject,
    body: str,
    html: str | None = None,
) -> dict[str, Any]:
    """Send a message (text, plus HTML as an alternative if given) from TASKS_SMTP_FROM.

    4xx replies, connection errors and timeouts raise and are retried; 5xx replies fail at
    once. Recipients the server refuses while accepting others are reported, not retried
    (a retry would send the others a second copy). The Message-ID is the task id, so a retry
    after a lost reply is the same message to receivers that deduplicate.
    Result: `{"accepted": [...], "refused": {address: "code reply"}}`.
    """
    if ctx.services is None:
        raise PermanentError("send_email needs the service's settings (TASKS_SMTP_URL)")
    settings = ctx.services.settings
    if not settings.smtp_url:
        raise PermanentError("TASKS_SMTP_URL is not set: no SMTP server to send email through")
    if not settings.smtp_from:
        raise PermanentError("TASKS_SMTP_FROM is not set: no address to send email from")
    server = _parse_url(settings.smtp_url)
    recipients = [to] if isinstance(to, str) else list(to)
    sender = parseaddr(settings.smtp_from)[1] or settings.smtp_from

    message = EmailMessage()
    message["From"] = settings.smtp_from
    message["To"] = ", ".join(recipients)
    message["Subject"] = subject
    message["Date"] = formatdate(usegmt=True)
    domain = sender.rpartition("@")[2] if "@" in sender else "localhost"
    message["Message-ID"] = f"<{ctx.task_id}@{domain}>"  # the same on every attempt
    message.set_content(body)
    if html is not None:
        message.add_alternative(html, subtype="html")

    if ctx.cancelled:
        raise PermanentError("cancelled before sending")
    refused = _send(server, sender, recipients, message)
    return {
        "accepted": [r for r in recipients if r not in refused],
        "refused": {r: f"{code} {_text(reply)}" for r, (code, reply) in refused.items()},
    }


def _parse_url(url: str) -> _Server:
    parts = urlsplit(url)
    if parts.scheme not in ("smtp", "smtps"):
        raise PermanentError("TASKS_SMTP_URL must start with smtp:// or smtps://")
    try:
        port = parts.port
    except ValueError:
        raise PermanentError("TASKS_SMTP_URL has an invalid port") from None
    if not parts.hostname:
        raise PermanentError("TASKS_SMTP_URL names no host")
    implicit_tls = parts.scheme == "smtps"
    flag = parse_qs(parts.query).get("starttls", ["false"])[-1].lower()
    starttls = not implicit_tls and flag in ("true", "1", "yes", "on")
    default_port = 465 if implicit_tls else 587 if starttls else 25
    return _Server(
        host=parts.hostname,
        port=port or default_port,
        implicit_tls=implicit_tls,
        starttls=starttls,
        user=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )


def _send(
    server: _Server, sender: str, recipients: list[str], message: EmailMessage
) -> dict[str, tuple[int, bytes]]:
    """Deliver to the server; returns the refused recipients; raises by how it failed."""
    where = f"SMTP server {server.host}:{server.port}"
    try:
        tls = ssl.create_default_context()
        smtp_class = smtplib.SMTP_SSL if server.implicit_tls else smtplib.SMTP
        kwargs: dict[str, Any] = {"context": tls} if server.implicit_tls else {}
        with smtp_class(server.host, server.port, timeout=SOCKET_TIMEOUT, **kwargs) as smtp:
            if server.starttls:
                smtp.starttls(context=tls)
            if server.user:
                smtp.login(server.user, server.password or "")
            return smtp.send_message(message, from_addr=sender, to_addrs=recipients)
    except smtplib.SMTPRecipientsRefused as exc:
        replies = ", ".join(f"{r}: {c} {_text(m)}" for r, (c, m) in exc.recipients.items())
        if all(code >= 500 for code, _ in exc.recipients.values()):
            raise PermanentError(f"{where} refused every recipient: {replies}") from None
        raise SMTPTemporaryError(f"{where} refused the recipients for now: {replies}") from None
    except smtplib.SMTPNotSupportedError as exc:
        raise PermanentError(f"{where}: {exc}") from None
    except smtplib.SMTPResponseException as exc:
        reply = f"{where} answered {exc.smtp_code} {_text(exc.smtp_error)}"
        if exc.smtp_code >= 500:
            raise PermanentError(reply) from None
        raise SMTPTemporaryError(reply) from None
    except ssl.SSLCertVerificationError as exc:
        raise PermanentError(
            f"{where}: TLS certificate not trusted: {exc.verify_message}"
        ) from None
    except smtplib.SMTPServerDisconnected as exc:
        raise ConnectionError(f"{where} closed the connection: {exc}") from None
    except smtplib.SMTPException as exc:  # e.g. no AUTH method both sides know: configuration
        raise PermanentError(f"{where}: {exc}") from None
    except TimeoutError:
        raise TimeoutError(f"{where} did not answer within {SOCKET_TIMEOUT:g} s") from None
    except OSError as exc:
        raise ConnectionError(f"cannot reach {where}: {exc}") from None


def _text(reply: bytes | str) -> str:
    return reply.decode(errors="replace") if isinstance(reply, bytes) else reply
