"""The `send_email` task against a real SMTP server (aiosmtpd) on 127.0.0.1."""

from __future__ import annotations

import logging
import ssl
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import trustme
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from tasks import Context, PermanentError
from tasks.send_email import _parse_url, send_email
from tests.harness import SAMPLE_MODULES, free_port
from tests.helpers import App, AppFactory
from tests.mailbox import StartServer

pytestmark = pytest.mark.anyio

MODULES = (*SAMPLE_MODULES, "tasks.send_email", "tasks.http_request")
FROM = "Service <noreply@example.test>"
USER = "mailer"
PASSWORD = "s3cret p@ss:w/rd"  # URL-encoded in TASKS_SMTP_URL, decoded by the task


def authenticator(
    server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
) -> AuthResult:
    ok = isinstance(data, LoginPassword) and data == (USER.encode(), PASSWORD.encode())
    # handled=False: aiosmtpd answers a failure with its own 535.
    return AuthResult(success=ok, handled=False, auth_data=data if ok else None)


@pytest.fixture
def tls_server_context(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ssl.SSLContext:
    """A certificate for 127.0.0.1 from a throwaway CA that SSL_CERT_FILE makes trusted."""
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    return context


async def send(app: App, **params: Any) -> dict[str, Any]:
    task = await app.post_task("send_email", params={"subject": "Hi", "body": "Hello", **params})
    return await app.wait_for(task["id"], timeout=15)


async def test_a_message_arrives_with_its_from_to_subject_and_body(
    make_app: AppFactory, smtp_server: StartServer
) -> None:
    mail = smtp_server()
    app = await make_app(modules=MODULES, smtp_url=f"smtp://127.0.0.1:{mail.port}", smtp_from=FROM)
    task = await app.post_task(
        "send_email",
        params={"to": "ada@example.test", "subject": "Welcome, Ada", "body": "Glad you came.\n"},
    )
    assert task["max_attempts"] == 3
    done = await app.wait_for(task["id"])
    assert done["status"] == "completed", done
    assert done["result"] == {"accepted": ["ada@example.test"], "refused": {}}
    (got,) = mail.mailbox.received
    assert got.mail_from == "noreply@example.test"
    assert got.rcpt_tos == ["ada@example.test"]
    assert got.message["From"] == FROM
    assert got.message["To"] == "ada@example.test"
    assert got.message["Subject"] == "Welcome, Ada"
    assert got.message["Message-ID"] == f"<{task['id']}@example.test>"
    assert got.message["Date"]
    assert got.message.get_content_type() == "text/plain"
    assert got.message.get_content() == "Glad you came.\n"
    assert not got.tls and got.login is None


async def test_a_list_of_recipients_gets_one_message(
    make_app: AppFactory, smtp_server: StartServer
) -> None:
    mail = smtp_server()
    app = await make_app(modules=MODULES, smtp_url=f"smtp://127.0.0.1:{mail.port}", smtp_from=FROM)
    to = ["a@example.test", "b@example.test", "c@example.org"]
    done = await send(app, to=to)
    assert done["status"] == "completed", done
    assert done["result"]["accepted"] == to
    (got,) = mail.mailbox.received
    assert got.rcpt_tos == to
    assert got.message["To"] == "a@example.test, b@example.test, c@example.org"


async def test_html_makes_a_multipart_alternative_message(
    make_app: AppFactory, smtp_server: StartServer
) -> None:
    mail = smtp_server()
    app = await make_app(modules=MODULES, smtp_url=f"smtp://127.0.0.1:{mail.port}", smtp_from=FROM)
    done = await send(app, to="ada@example.test", body="Plain words", html="<p>Rich words</p>")
    assert done["status"] == "completed", done
    (got,) = mail.mailbox.received
    assert got.message.get_content_type() == "multipart/alternative"
    text, html = got.message.iter_parts()
    assert isinstance(text, EmailMessage) and isinstance(html, EmailMessage)
    assert text.get_content_type() == "text/plain"
    assert text.get_content().strip() == "Plain words"
    assert html.get_content_type() == "text/html"
    assert html.get_content().strip() == "<p>Rich words</p>"


async def test_starttls_then_login(
    make_app: AppFactory,
    smtp_server: StartServer,
    tls_server_context: ssl.SSLContext,
    caplog: pytest.LogCaptureFixture,
) -> None:
    mail = smtp_server(
        tls_context=tls_server_context,
        require_starttls=True,
        authenticator=authenticator,
        auth_required=True,
    )
    url = f"smtp://{USER}:{quote(PASSWORD, safe='')}@127.0.0.1:{mail.port}?starttls=true"
    app = await make_app(modules=MODULES, smtp_url=url, smtp_from=FROM)
    with caplog.at_level(logging.DEBUG):
        done = await send(app, to="ada@example.test")
    assert done["status"] == "completed", done
    (got,) = mail.mailbox.received
    assert got.tls and got.login == USER.encode()
    assert PASSWORD not in caplog.text and quote(PASSWORD, safe="") not in caplog.text


async def test_smtps_implicit_tls_with_login(
    make_app: AppFactory, smtp_server: StartServer, tls_server_context: ssl.SSLContext
) -> None:
    mail = smtp_server(
        ssl_context=tls_server_context, authenticator=authenticator, auth_require_tls=False
    )
    url = f"smtps://{USER}:{quote(PASSWORD, safe='')}@127.0.0.1:{mail.port}"
    app = await make_app(modules=MODULES, smtp_url=url, smtp_from=FROM)
    done = await send(app, to="ada@example.test")
    assert done["status"] == "completed", done
    (got,) = mail.mailbox.received
    assert got.tls and got.login == USER.encode()


async def test_a_wrong_password_fails_at_once_without_showing_it(
    make_app: AppFactory,
    smtp_server: StartServer,
    tls_server_context: ssl.SSLContext,
    caplog: pytest.LogCaptureFixture,
) -> None:
    mail = smtp_server(
        ssl_context=tls_server_context, authenticator=authenticator, auth_require_tls=False
    )
    wrong = "not-the-password"
    url = f"smtps://{USER}:{wrong}@127.0.0.1:{mail.port}"
    app = await make_app(modules=MODULES, smtp_url=url, smtp_from=FROM)
    done = await send(app, to="ada@example.test")
    assert done["status"] == "failed"
    assert done["attempts"] == 1
    assert "535" in done["error"]
    assert wrong not in done["error"] and wrong not in caplog.text
    assert mail.mailbox.received == []


async def test_an_untrusted_certificate_fails_at_once(
    make_app: AppFactory, smtp_server: StartServer, tls_server_context: ssl.SSLContext
) -> None:
    # A certificate for 127.0.0.1 from a CA nobody trusts.
    untrusted = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    trustme.CA().issue_cert("127.0.0.1").configure_cert(untrusted)
    mail = smtp_server(ssl_context=untrusted)
    app = await make_app(modules=MODULES, smtp_url=f"smtps://127.0.0.1:{mail.port}", smtp_from=FROM)
    done = await send(app, to="ada@example.test")
    assert done["status"] == "failed"
    assert done["attempts"] == 1
    assert "certificate" in done["error"]


async def test_a_451_is_retried_and_the_second_attempt_delivers(
    make_app: AppFactory, smtp_server: StartServer
) -> None:
    mail = smtp_server()
    mail.mailbox.data_replies.append("451 4.7.1 Greylisted, try again later")
    app = await make_app(modules=MODULES, smtp_url=f"smtp://127.0.0.1:{mail.port}", smtp_from=FROM)
    done = await send(app, to="ada@example.test")
    assert done["status"] == "completed", done
    assert done["attempts"] == 2
    assert done["error"] is None
    assert mail.mailbox.data_attempts == 2
    assert len(mail.mailbox.received) == 1


async def test_a_451_error_is_shown_while_waiting_for_the_retry(
    make_app: AppFactory, smtp_server: StartServer
) -> None:
    mail = smtp_server()
    mail.mailbox.data_replies.append("451 4.7.1 Greylisted, try again later")
    app = await make_app(modules=MODULES, smtp_url=f"smtp://127.0.0.1:{mail.port}", smtp_from=FROM)
    task = await app.post_task(
        "send_email",
        params={"to": "ada@example.test", "subject": "Hi", "body": "Hello"},
        max_attempts=1,
    )
    done = await app.wait_for(task["id"])
    assert done["status"] == "failed"
    assert "451" in done["error"] and "Greylisted" in done["error"]
    assert done["error"].startswith("SMTPTemporaryError: ")


async def test_a_550_for_every_recipient_fails_at_once(
    make_app: AppFactory, smtp_server: StartServer
) -> None:
    mail = smtp_server()
    mail.mailbox.refuse["ghost@example.test"] = "550 5.1.1 No such user"
    app = await make_app(modules=MODULES, smtp_url=f"smtp://127.0.0.1:{mail.port}", smtp_from=FROM)
    done = await send(app, to="ghost@example.test")
    assert done["status"] == "failed"
    assert done["attempts"] == 1 and done["max_attempts"] == 3
    assert "550" in done["error"] and "No such user" in done["error"]
    assert done["error"].startswith("PermanentError: ")
    assert mail.mailbox.received == []


async def test_recipients_refused_by_the_server_are_left_out_of_accepted(
    make_app: AppFactory, smtp_server: StartServer
) -> None:
    mail = smtp_server()
    mail.mailbox.refuse["ghost@example.test"] = "550 5.1.1 No such user"
    app = await make_app(modules=MODULES, smtp_url=f"smtp://127.0.0.1:{mail.port}", smtp_from=FROM)
    done = await send(app, to=["ada@example.test", "ghost@example.test"])
    assert done["status"] == "completed", done
    assert done["result"] == {
        "accepted": ["ada@example.test"],
        "refused": {"ghost@example.test": "550 5.1.1 No such user"},
    }
    (got,) = mail.mailbox.received
    assert got.rcpt_tos == ["ada@example.test"]


async def test_no_server_listening_is_retried_then_fails(make_app: AppFactory) -> None:
    port = free_port()  # nothing listens there
    app = await make_app(modules=MODULES, smtp_url=f"smtp://127.0.0.1:{port}", smtp_from=FROM)
    task = await app.post_task(
        "send_email",
        params={"to": "ada@example.test", "subject": "Hi", "body": "Hello"},
        max_attempts=2,
    )
    done = await app.wait_for(task["id"], timeout=15)
    assert done["status"] == "failed"
    assert done["attempts"] == 2
    assert "Connection refused" in done["error"]
    assert f"cannot reach SMTP server 127.0.0.1:{port}: " in done["error"]


async def test_without_smtp_url_it_is_accepted_then_fails_saying_so(make_app: AppFactory) -> None:
    app = await make_app(modules=MODULES)
    done = await send(app, to="ada@example.test")
    assert done["status"] == "failed"
    assert done["attempts"] == 1
    assert "TASKS_SMTP_URL is not set" in done["error"]
    assert done["result"] is None


async def test_without_smtp_from_it_fails_saying_so(
    make_app: AppFactory, smtp_server: StartServer
) -> None:
    mail = smtp_server()
    app = await make_app(modules=MODULES, smtp_url=f"smtp://127.0.0.1:{mail.port}")
    done = await send(app, to="ada@example.test")
    assert done["status"] == "failed"
    assert done["attempts"] == 1
    assert "TASKS_SMTP_FROM is not set" in done["error"]
    assert mail.mailbox.data_attempts == 0


@pytest.mark.parametrize(
    "params",
    [
        {"to": "not-an-address"},
        {"to": "two@@example.test"},
        {"to": "Ada <ada@example.test>"},
        {"to": ["ada@example.test", "nope"]},
        {"to": []},
        {"to": [f"user{i}@example.test" for i in range(101)]},
        {"to": "ada@example.test\r\nBcc: all@example.test"},
        {"to": ["ada@example.test\nBcc: all@example.test"]},
        {"subject": "Hello\r\nBcc: all@example.test"},
        {"subject": "Hello\nX-Injected: yes"},
        {"subject": "x" * 999},
        {"body": None},
        {"cc": "ada@example.test"},
    ],
)
async def test_bad_params_are_a_422_and_nothing_is_stored(
    make_app: AppFactory, params: dict[str, Any]
) -> None:
    app = await make_app(modules=MODULES, smtp_url="smtp://127.0.0.1:1", smtp_from=FROM)
    body = {"to": "ada@example.test", "subject": "Hi", "body": "Hello", **params}
    response = await app.client.post("/tasks", json={"name": "send_email", "params": body})
    assert response.status_code == 422, response.text
    listing = await app.client.get("/tasks")
    assert listing.json()["items"] == []


@pytest.mark.parametrize(
    ("url", "port", "implicit_tls", "starttls"),
    [
        ("smtp://mail.example.test", 25, False, False),
        ("smtp://mail.example.test?starttls=true", 587, False, True),
        ("smtps://mail.example.test", 465, True, False),
        ("smtp://mail.example.test:2525?starttls=true", 2525, False, True),
    ],
)
def test_smtp_url_defaults(url: str, port: int, implicit_tls: bool, starttls: bool) -> None:
    server = _parse_url(url)
    assert (server.host, server.port) == ("mail.example.test", port)
    assert (server.implicit_tls, server.starttls) == (implicit_tls, starttls)
    assert server.user is None and server.password is None


def test_smtp_url_credentials_are_decoded_and_never_shown() -> None:
    server = _parse_url(f"smtp://{USER}:{quote(PASSWORD, safe='')}@127.0.0.1:25")
    assert (server.user, server.password) == (USER, PASSWORD)
    assert PASSWORD not in repr(server) and quote(PASSWORD, safe="") not in repr(server)


@pytest.mark.parametrize("url", ["http://mail.example.test", "smtp://", "smtp://host:99999"])
def test_a_bad_smtp_url_is_a_permanent_error(url: str) -> None:
    with pytest.raises(PermanentError, match="TASKS_SMTP_URL"):
        _parse_url(url)


def test_outside_the_service_it_fails_clearly() -> None:
    context = Context("t1", 1, sink=None, loop=None)  # type: ignore[arg-type]
    with pytest.raises(PermanentError, match="needs the service"):
        send_email(context, to="ada@example.test", subject="Hi", body="Hello")
