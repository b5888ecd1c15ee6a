"""The README's per-user reminder example under uvicorn: the route makes the user's schedule,
another deletes it; invalid input from the route's caller is a 422, not a 500."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from zoneinfo import ZoneInfo

import httpx
import pytest

from tests.harness import ROOT, Server

pytestmark = pytest.mark.slow


def test_readme_shows_the_example_file_verbatim() -> None:
    readme = (ROOT / "README.md").read_text()
    example = (ROOT / "examples" / "reminders.py").read_text()
    assert example.split('"""', 2)[2].strip() in readme


def test_a_route_makes_and_deletes_a_users_reminder(
    server_factory: Callable[..., Server],
) -> None:
    server = server_factory(app="examples.reminders:app", env={"TASKS_MODULES": ""}).start()
    body = {"user_id": 7, "email": "ada@example.test", "tz": "Europe/Paris"}
    response = httpx.post(f"{server.url}/signup", json=body)
    assert response.status_code == 201, response.text
    assert response.json()["reminder"] == "reminder:7"
    local = datetime.fromisoformat(response.json()["next_at"]).astimezone(ZoneInfo("Europe/Paris"))
    assert (local.weekday(), local.hour, local.minute) == (0, 9, 0)

    schedule = httpx.get(f"{server.url}/schedules/reminder:7").json()
    assert schedule["source"] == "api" and schedule["task"] == "send_email"
    assert schedule["cron"] == "0 9 * * 1" and schedule["tz"] == "Europe/Paris"
    assert schedule["params"]["to"] == "ada@example.test"

    again = httpx.post(f"{server.url}/signup", json=body)
    assert again.status_code == 409 and "reminder:7" in again.json()["detail"]
    bad = httpx.post(f"{server.url}/signup", json={**body, "user_id": 8, "tz": "Mars/Base"})
    assert bad.status_code == 422 and "time zone" in bad.text

    assert httpx.delete(f"{server.url}/users/7").status_code == 204
    assert httpx.get(f"{server.url}/schedules/reminder:7").status_code == 404
    assert httpx.delete(f"{server.url}/users/7").status_code == 404
