"""The README's /signup example, end to end: uvicorn, the route, the task, a real SMTP server."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.harness import ROOT, Server
from tests.mailbox import StartServer

pytestmark = pytest.mark.slow


def test_readme_shows_the_example_file_verbatim() -> None:
    readme = (ROOT / "README.md").read_text()
    example = (ROOT / "examples" / "signup.py").read_text()
    body = example.split('"""', 2)[2].strip()
    assert body in readme


def test_signup_queues_a_durable_welcome_email(
    server_factory: Callable[..., Server],
    smtp_server: StartServer,
    tmp_path: Path,
) -> None:
    mail = smtp_server()
    env = {
        "TASKS_SMTP_URL": f"smtp://127.0.0.1:{mail.port}",
        "TASKS_SMTP_FROM": "Shop <noreply@shop.test>",
        "TASKS_MODULES": "",
    }
    server = server_factory(app="examples.signup:app", env=env).start()
    response = httpx.post(f"{server.url}/signup", json={"email": "ada@example.test"})
    assert response.status_code == 201
    task_id = response.json()["welcome_email_task"]

    deadline = time.monotonic() + 30
    while (task := httpx.get(f"{server.url}/tasks/{task_id}").json())["status"] != "completed":
        assert task["status"] in ("pending", "running"), task
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert task["name"] == "send_email"
    assert task["result"]["accepted"] == ["ada@example.test"]
    [received] = mail.mailbox.received
    assert received.rcpt_tos == ["ada@example.test"]
    assert received.message["Subject"] == "Welcome!"
    assert received.message.get_content().strip() == "Thanks for signing up."
    # Started from a route, it is listed and cancellable like any other task.
    listed = httpx.get(f"{server.url}/tasks", params={"name": "send_email"}).json()["items"]
    assert [t["id"] for t in listed] == [task_id]

    invalid = httpx.post(f"{server.url}/signup", json={"email": "not an address"})
    assert invalid.status_code == 422
