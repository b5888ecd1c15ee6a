"""A real SMTP server for tests: aiosmtpd on 127.0.0.1 with a scriptable mailbox."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, LoginPassword, Session


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    tls: bool
    login: bytes | None


@dataclass
class Mailbox:
    """The server's handler: keeps what arrives; scripted replies for RCPT and DATA."""

    received: list[Received] = field(default_factory=list)
    refuse: dict[str, str] = field(default_factory=dict)  # address -> RCPT reply
    data_replies: list[str] = field(default_factory=list)  # DATA replies, used up in order
    data_attempts: int = 0

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.data_attempts += 1
        if self.data_replies:
            return self.data_replies.pop(0)
        assert isinstance(envelope.content, bytes)
        wire = envelope.content.replace(b"\r\n", b"\n")  # SMTP's line ends, as Python's
        message = message_from_bytes(wire, policy=policy.default)
        assert isinstance(message, EmailMessage)
        assert server.transport is not None
        auth = session.auth_data
        self.received.append(
            Received(
                mail_from=str(envelope.mail_from),
                rcpt_tos=list(envelope.rcpt_tos),
                message=message,
                tls=server.transport.get_extra_info("ssl_object") is not None,
                login=auth.login if isinstance(auth, LoginPassword) else None,
            )
        )
        return "250 Message accepted"


@dataclass
class Mail:
    mailbox: Mailbox
    port: int


StartServer = Callable[..., Mail]
