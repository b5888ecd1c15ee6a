"""The `http_request` task against a real HTTP server on 127.0.0.1, scripted per path."""

from __future__ import annotations

import contextlib
import json
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import trustme

from tasks import destinations
from tasks.http_request import BODY_LIMIT
from tests.harness import SAMPLE_MODULES, free_port
from tests.helpers import App, AppFactory

pytestmark = pytest.mark.anyio

MODULES = (*SAMPLE_MODULES, "tasks.send_email", "tasks.http_request")


@dataclass
class Seen:
    """One request as the server received it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Web:
    url: str
    seen: list[Seen] = field(default_factory=list)
    hits: dict[str, int] = field(default_factory=dict)
    release: threading.Event = field(default_factory=threading.Event)

    def requests_to(self, path: str) -> list[Seen]:
        return [s for s in self.seen if s.path == path]


def handler_for(web: Web) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_any(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            web.seen.append(Seen(self.command, self.path, dict(self.headers.items()), body))
            hit = web.hits[self.path] = web.hits.get(self.path, 0) + 1
            if self.path == "/json":
                self.answer(200, b'{"ok": true, "n": 1}', "application/json")
            elif self.path == "/flaky":
                if hit == 1:
                    self.answer(503, b"try again later")
                else:
                    self.answer(200, b"fine now")
            elif self.path == "/missing":
                self.answer(404, b"no such thing")
            elif self.path == "/big":
                self.answer(200, b"x" * 1_000_000)
            elif self.path == "/slow":
                web.release.wait(10)
                self.answer(200, b"too late")
            elif self.path == "/moved":
                self.send_response(302)
                self.send_header("Location", "/json")
                self.send_header("Content-Length", "0")
                self.end_headers()
            else:
                self.answer(500, b"unscripted path")

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_any

        def answer(self, status: int, body: bytes, content_type: str = "text/plain") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            # The client may stop reading (the body cap), as it should.
            with contextlib.suppress(ConnectionError):
                self.wfile.write(body)

    return Handler


@pytest.fixture
def web() -> Iterator[Web]:
    yield from serve()


def serve(tls: ssl.SSLContext | None = None) -> Iterator[Web]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler_for(Web("")))
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    scheme = "https" if tls is not None else "http"
    web = Web(f"{scheme}://127.0.0.1:{server.server_address[1]}")
    server.RequestHandlerClass = handler_for(web)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield web
    finally:
        web.release.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


# The test server is on loopback, which http_request refuses unless allowed.
LOOPBACK_ALLOWED = ("127.0.0.1/32",)


@pytest.fixture
async def app(make_app: AppFactory) -> App:
    return await make_app(modules=MODULES, http_allow=LOOPBACK_ALLOWED)


async def test_a_json_post_arrives_and_its_answer_is_the_result(app: App, web: Web) -> None:
    task = await app.post_task(
        "http_request",
        params={
            "url": f"{web.url}/json",
            "json": {"event": "signup", "id": 7, "tags": ["a", None]},
            "headers": {"X-Signature": "abc123"},
        },
    )
    assert task["max_attempts"] == 5
    assert task["params"]["method"] == "POST" and task["params"]["timeout"] == 30
    done = await app.wait_for(task["id"])
    assert done["status"] == "completed", done
    result = done["result"]
    assert result["status_code"] == 200
    assert json.loads(result["body"]) == {"ok": True, "n": 1}
    assert result["headers"]["content-type"] == "application/json"
    assert result["truncated"] is False
    (seen,) = web.requests_to("/json")
    assert seen.method == "POST"
    assert json.loads(seen.body) == {"event": "signup", "id": 7, "tags": ["a", None]}
    assert seen.headers["X-Signature"] == "abc123"
    assert seen.headers["Content-Type"] == "application/json"
    assert seen.headers["Accept-Encoding"] == "identity"  # the body cap counts real bytes


async def test_other_methods_are_sent_as_asked(app: App, web: Web) -> None:
    task = await app.post_task(
        "http_request", params={"url": f"{web.url}/json", "method": "put", "json": [1, 2]}
    )
    done = await app.wait_for(task["id"])
    assert done["status"] == "completed", done
    assert done["params"]["method"] == "PUT"
    (seen,) = web.requests_to("/json")
    assert seen.method == "PUT" and json.loads(seen.body) == [1, 2]


async def test_a_redirect_is_a_result_not_followed(app: App, web: Web) -> None:
    task = await app.post_task("http_request", params={"url": f"{web.url}/moved"})
    done = await app.wait_for(task["id"])
    assert done["status"] == "completed", done
    assert done["result"]["status_code"] == 302
    assert done["result"]["headers"]["location"] == "/json"
    assert web.requests_to("/json") == []


async def test_a_503_is_retried_and_the_second_attempt_completes(app: App, web: Web) -> None:
    task = await app.post_task("http_request", params={"url": f"{web.url}/flaky"})
    done = await app.wait_for(task["id"], timeout=15)
    assert done["status"] == "completed", done
    assert done["attempts"] == 2
    assert done["result"]["status_code"] == 200 and done["result"]["body"] == "fine now"
    assert web.hits["/flaky"] == 2


async def test_a_503_error_says_what_happened(app: App, web: Web) -> None:
    task = await app.post_task("http_request", params={"url": f"{web.url}/flaky"}, max_attempts=1)
    done = await app.wait_for(task["id"])
    assert done["status"] == "failed"
    assert f"503 Service Unavailable from {web.url}/flaky" in done["error"]
    assert "try again later" in done["error"]


async def test_a_404_fails_at_once_without_retry(app: App, web: Web) -> None:
    task = await app.post_task("http_request", params={"url": f"{web.url}/missing"})
    done = await app.wait_for(task["id"])
    assert done["status"] == "failed"
    assert done["attempts"] == 1 and done["max_attempts"] == 5
    assert "404 Not Found" in done["error"] and "no such thing" in done["error"]
    assert web.hits["/missing"] == 1


async def test_connection_refused_is_retried_then_fails_clearly(app: App) -> None:
    url = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens there
    task = await app.post_task("http_request", params={"url": url}, max_attempts=2)
    done = await app.wait_for(task["id"], timeout=15)
    assert done["status"] == "failed"
    assert done["attempts"] == 2
    assert done["error"] == f"ConnectionError: connection refused: {url}"


async def test_a_huge_body_is_cut_at_64_kib(app: App, web: Web) -> None:
    task = await app.post_task("http_request", params={"url": f"{web.url}/big", "method": "GET"})
    done = await app.wait_for(task["id"])
    assert done["status"] == "completed", done
    assert BODY_LIMIT == 65536
    assert done["result"]["body"] == "x" * 65536
    assert done["result"]["truncated"] is True
    assert done["result"]["headers"]["content-length"] == "1000000"


async def test_a_server_slower_than_the_timeout_fails_the_attempt(app: App, web: Web) -> None:
    task = await app.post_task(
        "http_request", params={"url": f"{web.url}/slow", "timeout": 0.3}, max_attempts=1
    )
    done = await app.wait_for(task["id"], timeout=10)
    assert done["status"] == "failed"
    assert done["error"].startswith("TimeoutError: ")
    assert "timed out after 0.3 s" in done["error"]
    assert f"{web.url}/slow" in done["error"]


@pytest.mark.parametrize(
    "params",
    [
        {"url": "file:///etc/passwd"},
        {"url": "ftp://127.0.0.1/file"},
        {"url": "not a url"},
        {"url": "http://127.0.0.1/", "method": "TRACE"},
        {"url": "http://127.0.0.1/", "timeout": 0},
        {"url": "http://127.0.0.1/", "timeout": 301},
        {"url": "http://127.0.0.1/", "headers": {"X-A": "b\r\nX-Injected: 1"}},
        {"url": "http://127.0.0.1/", "headers": {"X A": "b"}},
        {"url": "http://127.0.0.1/", "follow": True},
    ],
)
async def test_bad_params_are_a_422_and_nothing_is_stored(app: App, params: dict[str, Any]) -> None:
    response = await app.client.post("/tasks", json={"name": "http_request", "params": params})
    assert response.status_code == 422, response.text
    listing = await app.client.get("/tasks")
    assert listing.json()["items"] == []


# -- destinations: loopback and other internal addresses are refused unless allowed ---------

# Every way of writing a loopback (or "this host") address that a request could use. Only
# forms that reach this machine if the guard failed: a test never sends traffic elsewhere.
REFUSED_FORMS = [
    "http://127.0.0.1:{port}/json",
    "http://localhost:{port}/json",
    "http://LocalHost:{port}/json",
    "http://127.1:{port}/json",
    "http://127.000.000.001:{port}/json",
    "http://2130706433:{port}/json",
    "http://0x7f000001:{port}/json",
    "http://0177.0.0.1:{port}/json",
    "http://127.0.0.2:{port}/json",
    "http://0.0.0.0:{port}/json",
    "http://0:{port}/json",
    "http://[::1]:{port}/json",
    "http://[::ffff:127.0.0.1]:{port}/json",
    "http://[::ffff:7f00:1]:{port}/json",
    "http://[0:0:0:0:0:ffff:7f00:0001]:{port}/json",
]


def _port(web: Web) -> int:
    return int(web.url.rsplit(":", 1)[1])


async def _refused(app: App, url: str) -> dict[str, Any]:
    task = await app.post_task("http_request", params={"url": url})
    done = await app.wait_for(task["id"])
    assert done["status"] == "failed", (url, done)
    assert done["attempts"] == 1 and done["max_attempts"] == 5, (url, done)  # no retry
    assert done["error"].startswith("DestinationNotAllowed: destination not allowed: "), done
    return done


async def test_every_form_of_a_loopback_address_is_refused_and_nothing_sent(
    make_app: AppFactory, web: Web
) -> None:
    app = await make_app(modules=MODULES)
    for form in REFUSED_FORMS:
        done = await _refused(app, form.format(port=_port(web)))
        assert "TASKS_HTTP_ALLOW" in done["error"]
    assert web.hits == {}


async def test_the_error_names_the_address_and_why(make_app: AppFactory, web: Web) -> None:
    app = await make_app(modules=MODULES)
    done = await _refused(app, f"http://localhost:{_port(web)}/json")
    assert "localhost resolves to " in done["error"] and "a loopback address" in done["error"]
    assert done["error"].endswith(f": http://localhost:{_port(web)}/json")
    done = await _refused(app, f"http://0.0.0.0:{_port(web)}/json")
    assert "0.0.0.0, a unspecified address" not in done["error"]
    assert "destination not allowed: 0.0.0.0, an unspecified address" in done["error"]


async def test_allowed_by_cidr(make_app: AppFactory, web: Web) -> None:
    other = await make_app(modules=MODULES, http_allow=("10.0.0.0/8", "::1/128"))
    await _refused(other, f"{web.url}/json")  # another range does not help
    assert web.hits == {}
    app = await make_app(modules=MODULES, http_allow=("127.0.0.0/8",))
    task = await app.post_task("http_request", params={"url": f"{web.url}/json"})
    done = await app.wait_for(task["id"])
    assert done["status"] == "completed", done
    assert web.hits == {"/json": 1}


async def test_allowed_by_name(make_app: AppFactory, web: Web) -> None:
    app = await make_app(modules=MODULES, http_allow=("localhost",))
    await _refused(app, f"{web.url}/json")  # the name is allowed, not the address itself
    assert web.hits == {}
    task = await app.post_task(
        "http_request", params={"url": f"http://localhost:{_port(web)}/json"}
    )
    done = await app.wait_for(task["id"])
    assert done["status"] == "completed", done
    assert web.hits == {"/json": 1}


async def test_a_name_is_checked_on_the_address_it_resolves_to_when_connecting(
    make_app: AppFactory, web: Web, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A public-looking name that resolves inside (DNS rebinding) is refused at connect time;
    one internal address among public ones refuses the name before any connection."""
    answers = {"hooks.example": ["127.0.0.1"], "mixed.example": ["93.184.215.14", "127.0.0.1"]}
    looked_up: list[str] = []

    async def resolve(host: str, port: int) -> list[str]:
        looked_up.append(host)
        return answers[host]

    monkeypatch.setattr(destinations, "resolve", resolve)
    app = await make_app(modules=MODULES)
    port = _port(web)
    done = await _refused(app, f"http://hooks.example:{port}/json")
    assert "hooks.example resolves to 127.0.0.1, a loopback address" in done["error"]
    await _refused(app, f"http://mixed.example:{port}/json")
    assert web.hits == {}
    assert looked_up == ["hooks.example", "mixed.example"]  # resolved once, when connecting

    allowed = await make_app(modules=MODULES, http_allow=("hooks.example",))
    task = await allowed.post_task(
        "http_request", params={"url": f"http://hooks.example:{port}/json"}
    )
    done = await allowed.wait_for(task["id"])
    assert done["status"] == "completed", done
    (seen,) = web.requests_to("/json")
    assert seen.headers["Host"] == f"hooks.example:{port}"  # the name, though sent by address


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_web(ca: trustme.CA) -> Iterator[Web]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(context)
    yield from serve(context)


async def test_https_goes_to_the_checked_address_and_verifies_the_name(
    make_app: AppFactory, tls_web: Web, ca: trustme.CA, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The socket is opened to an address, TLS still checks the certificate for the name."""
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)
    monkeypatch.setattr(destinations, "_ssl_context", lambda: trusting)
    app = await make_app(modules=MODULES, http_allow=("localhost", "127.0.0.1/32"))
    url = f"https://localhost:{_port(tls_web)}/json"
    task = await app.post_task("http_request", params={"url": url, "method": "GET"})
    done = await app.wait_for(task["id"])
    assert done["status"] == "completed", done
    assert json.loads(done["result"]["body"]) == {"ok": True, "n": 1}
    # By address, the certificate (issued for localhost) does not match: refused by TLS.
    url = f"https://127.0.0.1:{_port(tls_web)}/json"
    task = await app.post_task("http_request", params={"url": url}, max_attempts=1)
    done = await app.wait_for(task["id"])
    assert done["status"] == "failed" and "CERTIFICATE_VERIFY_FAILED" in done["error"], done
    assert tls_web.hits == {"/json": 1}
