"""The dashboard in a real browser: Debian's chromium, driven by Playwright, on real uvicorn.

Needs /usr/bin/chromium (`apt-get install -y chromium`); Playwright's own browser downloads
are never used. Screenshots of every test land in test-artifacts/ (git-ignored). Set
UPDATE_DOCS_SCREENSHOT=1 to also rewrite docs/dashboard.png from the busy-dashboard test.
"""

from __future__ import annotations

import math
import os
import random
import re
import sqlite3
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Dialog,
    Locator,
    Page,
    Playwright,
    Request,
    expect,
    sync_playwright,
)

from tasks_service.counted import duration_bucket
from tasks_service.runtime.stats import minute_of
from tests.harness import ROOT, SAMPLE_MODULES, Server, ServerFactory, wait_until
from tests.helpers import TERMINAL

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = ROOT / "test-artifacts"
DOCS_SCREENSHOT = ROOT / "docs" / "dashboard.png"
SCHEDULED_MODULES = ",".join([*SAMPLE_MODULES, "tests.scheduled_tasks"])
HOSTILE = "<img src=x onerror=alert(1)>"
TOKEN = "dashboard-test-token"
READ_TOKEN = "dashboard-read-token"
# What chromium logs by itself for a fetch answered with an HTTP error, or not answered.
HTTP_ERROR_LOG = "Failed to load resource: the server responded with a status of {}"
REFUSED_LOG = "Failed to load resource: net::ERR_CONNECTION_REFUSED"

expect.set_options(timeout=10_000)


# -- the browser, launched once per module --------------------------------------------------


class Chromium:
    """Launches Debian's chromium on first use, so a missing browser fails the test itself."""

    def __init__(self) -> None:
        self._playwright: Playwright | None = None
        self._browser: Browser | None = None

    def browser(self) -> Browser:
        if not CHROMIUM.exists():
            pytest.fail(
                f"{CHROMIUM} is missing: the dashboard tests drive Debian's chromium. "
                "Install it with `apt-get install -y chromium`.",
                pytrace=False,
            )
        if self._browser is None:
            self._playwright = sync_playwright().start()
            self._browser = self._playwright.chromium.launch(
                executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
            )
        return self._browser

    def close(self) -> None:
        if self._browser is not None:
            self._browser.close()
        if self._playwright is not None:
            self._playwright.stop()


@pytest.fixture(scope="module")
def chromium() -> Iterator[Chromium]:
    holder = Chromium()
    yield holder
    holder.close()


# -- one page on one server -----------------------------------------------------------------


@dataclass
class Dashboard:
    server: Server
    context: BrowserContext
    page: Page
    expected_logs: tuple[str, ...]  # console errors the test provokes on purpose
    console_errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    list_reads: list[str] = field(default_factory=list)

    def on_console(self, message: ConsoleMessage) -> None:
        if message.type != "error":
            return
        if any(message.text.startswith(expected) for expected in self.expected_logs):
            return
        self.console_errors.append(f"{message.text} ({message.location.get('url')})")

    def on_dialog(self, dialog: Dialog) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    def on_request(self, request: Request) -> None:
        if request.method == "GET" and re.search(r"/tasks(\?|$)", request.url):
            self.list_reads.append(request.url)

    def wait_ready(self) -> None:
        """The event stream is connected and the task list read."""
        expect(self.page.locator("#live")).to_have_attribute("data-state", "live")
        expect(self.page.locator("#task-table")).to_have_attribute("aria-busy", "false")

    def rows(self) -> Locator:
        return self.page.locator("#task-rows tr")

    def row(self, task_id: str) -> Locator:
        return self.page.locator(f'#task-rows tr[data-task-id="{task_id}"]')

    def start_task(self, name: str, **params: str) -> None:
        """Fill the start form field by field, and submit it."""
        self.page.select_option("#start-type", name)
        for param, value in params.items():
            self.page.fill(f"#param-{param}", value)
        self.page.click("#start-submit")

    def assert_clean(self) -> None:
        assert self.console_errors == [], f"errors in the browser console: {self.console_errors}"
        assert self.dialogs == [], f"the page opened dialogs: {self.dialogs}"


OpenDashboard = Callable[..., Dashboard]


@pytest.fixture
def open_dashboard(
    chromium: Chromium, server_factory: ServerFactory, request: pytest.FixtureRequest
) -> Iterator[OpenDashboard]:
    """Open the page of a started server (torn down before the server stops)."""
    opened: list[Dashboard] = []

    def open_page(
        server: Server, *, expected_logs: tuple[str, ...] = (), ready: bool = True
    ) -> Dashboard:
        context = chromium.browser().new_context(viewport={"width": 1360, "height": 820})
        page = context.new_page()
        dashboard = Dashboard(server, context, page, expected_logs)
        page.on("console", dashboard.on_console)
        page.on("pageerror", lambda error: dashboard.console_errors.append(f"pageerror: {error}"))
        page.on("dialog", dashboard.on_dialog)
        page.on("request", dashboard.on_request)
        opened.append(dashboard)
        page.goto(f"{server.url}/")
        if ready:
            dashboard.wait_ready()
        return dashboard

    yield open_page
    ARTIFACTS.mkdir(exist_ok=True)
    for number, dashboard in enumerate(opened):
        suffix = f"-{number}" if number else ""
        try:
            dashboard.page.screenshot(path=ARTIFACTS / f"{request.node.name}{suffix}.png")
        finally:
            dashboard.context.close()


def start_server(server_factory: ServerFactory, tmp_path: Path, **env: str) -> Server:
    return server_factory(
        env={
            "TASKS_DATA_DIR": str(tmp_path / "data"),
            "TASKS_SHUTDOWN_GRACE": "0.5",
            **env,
        }
    ).start()


# -- the API, from the test's side ----------------------------------------------------------


def call(server: Server, method: str, path: str, **kwargs: Any) -> httpx.Response:
    headers = kwargs.pop("headers", {})
    token = server.env.get("TASKS_API_TOKEN")
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.request(method, f"{server.url}{path}", headers=headers, timeout=10, **kwargs)


def post(server: Server, name: str, **body: Any) -> dict[str, Any]:
    response = call(server, "POST", "/tasks", json={"name": name, **body})
    assert response.status_code == 202, response.text
    return response.json()


def get(server: Server, task_id: str) -> dict[str, Any]:
    response = call(server, "GET", f"/tasks/{task_id}")
    assert response.status_code == 200, response.text
    return response.json()


def wait_for(server: Server, task_id: str, check: Callable[[dict[str, Any]], bool]) -> None:
    """Poll the API (not the page) until `check` holds for the task."""
    wait_until(lambda: check(get(server, task_id)), timeout=30, what=f"task {task_id}")


def wait_for_status(server: Server, task_id: str, *statuses: str) -> None:
    wait_for(server, task_id, lambda task: task["status"] in statuses)


def progress_of(page: Page, task_id: str) -> float:
    value = page.locator(f'#task-rows tr[data-task-id="{task_id}"] progress').get_attribute(
        "aria-valuenow"
    )
    assert value is not None
    return float(value)


# -- tests ----------------------------------------------------------------------------------


def test_start_watch_cancel_and_retry_a_task(
    server_factory: ServerFactory, open_dashboard: OpenDashboard, tmp_path: Path
) -> None:
    server = start_server(server_factory, tmp_path)
    dash = open_dashboard(server)
    page = dash.page
    page.evaluate("window.sameDocument = true")  # gone if the page ever reloads

    dash.start_task("sleep", seconds="3", steps="30")
    running = page.locator('#task-rows tr[data-status="running"]')
    expect(running).to_have_count(1)
    task_id = running.get_attribute("data-task-id")
    assert task_id is not None
    expect(running.locator(".task-name")).to_have_text("sleep")
    reads_before = len(dash.list_reads)

    # The bar moves, fed by the event stream: the list is not read again meanwhile.
    page.wait_for_function(
        """id => Number(document.querySelector(`tr[data-task-id="${id}"] progress`)
                 ?.getAttribute("aria-valuenow")) > 0""",
        arg=task_id,
    )
    first = progress_of(page, task_id)
    page.wait_for_function(
        """([id, first]) => Number(document.querySelector(`tr[data-task-id="${id}"] progress`)
                 ?.getAttribute("aria-valuenow")) > first""",
        arg=[task_id, first],
    )
    second = progress_of(page, task_id)
    assert 0 < first < second <= 100
    assert running.locator("progress").evaluate("bar => bar.value") >= second - 0.1
    assert len(dash.list_reads) == reads_before
    assert page.evaluate("window.sameDocument") is True

    # Cancel by clicking: the row turns cancelled in place, and the API agrees.
    row = dash.row(task_id)
    row.locator('button[data-action="cancel"]').click()
    expect(row).to_have_attribute("data-status", "cancelled")
    assert get(server, task_id)["status"] == "cancelled"
    expect(row.locator('button[data-action="cancel"]')).to_have_count(0)

    # Retry by clicking: a new task with the same params appears at the top.
    row.locator('button[data-action="retry"]').click()
    newest = dash.rows().first
    expect(newest).not_to_have_attribute("data-task-id", task_id)
    retried_id = newest.get_attribute("data-task-id")
    assert retried_id is not None
    retried = get(server, retried_id)
    assert retried["name"] == "sleep"
    assert retried["params"] == {"seconds": 3.0, "steps": 30}
    expect(newest).to_have_attribute("data-status", re.compile("pending|running|completed"))
    expect(dash.rows()).to_have_count(2)
    expect(row).to_have_attribute("data-status", "cancelled")  # the old one is unchanged
    assert page.evaluate("window.sameDocument") is True
    call(server, "POST", f"/tasks/{retried_id}/cancel")
    dash.assert_clean()


def test_detail_follows_its_task_live(
    server_factory: ServerFactory, open_dashboard: OpenDashboard, tmp_path: Path
) -> None:
    server = start_server(server_factory, tmp_path)
    dash = open_dashboard(server)
    page = dash.page
    task = post(server, "sleep", params={"seconds": 1.5, "steps": 5}, priority=3)
    dash.row(task["id"]).click()

    detail = page.locator("#task-detail")
    expect(detail).to_be_visible()
    expect(detail).to_have_attribute("data-task-id", task["id"])
    expect(page.locator("#detail-title")).to_have_text("sleep")
    expect(page.locator("#detail-id")).to_have_text(task["id"])
    expect(page.locator("#detail-params")).to_contain_text('"seconds": 1.5')
    # Its own stream carries it to the end, while the drawer stays open.
    expect(page.locator("#detail-status")).to_have_text("completed")
    expect(page.locator("#detail-result")).to_contain_text('"slept": 1.5')
    facts = page.locator("#detail-facts")
    expect(facts).to_contain_text("1 of 1")  # attempts of max_attempts
    expect(facts).to_contain_text("Priority3")
    expect(facts).to_contain_text("Finished")
    expect(facts).to_contain_text("Ran for")
    expect(dash.row(task["id"])).to_have_attribute("data-status", "completed")

    page.click("#detail-close")
    expect(detail).to_be_hidden()
    dash.assert_clean()


def test_untrusted_text_is_shown_as_text(
    server_factory: ServerFactory, open_dashboard: OpenDashboard, tmp_path: Path
) -> None:
    server = start_server(server_factory, tmp_path)
    failed = post(server, "boom", params={"message": HOSTILE})  # listed when the page loads
    wait_for_status(server, failed["id"], "failed")
    dash = open_dashboard(server)
    page = dash.page

    # One more from the form, so it arrives through the event stream.
    dash.start_task("echo", text=HOSTILE)
    echo_row = page.locator("#task-rows tr").filter(has=page.locator(".task-name", has_text="echo"))
    expect(echo_row).to_have_attribute("data-status", "completed")
    expect(echo_row.locator(".params-summary")).to_have_text(f"text={HOSTILE}")
    failed_row = dash.row(failed["id"])
    expect(failed_row.locator(".params-summary")).to_have_text(f"message={HOSTILE}")
    expect(failed_row.locator(".outcome")).to_have_text(f"ValueError: {HOSTILE}")

    echo_row.click()
    expect(page.locator("#detail-params")).to_contain_text(f'"text": "{HOSTILE}"')
    expect(page.locator("#detail-result")).to_contain_text(f'"text": "{HOSTILE}"')
    page.click("#detail-close")
    failed_row.click()
    expect(page.locator("#detail-error")).to_have_text(f"ValueError: {HOSTILE}")
    expect(page.locator("#detail-params")).to_contain_text(HOSTILE)

    assert page.locator("#task-rows img").count() == 0
    assert page.locator("#task-detail img").count() == 0
    assert page.locator("img").count() == 0
    dash.assert_clean()  # no alert() dialog, no console error


def test_filters_paging_and_live_inserts(
    server_factory: ServerFactory, open_dashboard: OpenDashboard, tmp_path: Path
) -> None:
    server = start_server(server_factory, tmp_path)
    with ThreadPoolExecutor(8) as pool:
        noops = list(pool.map(lambda _: post(server, "noop")["id"], range(53)))
    for noop in noops:
        wait_for_status(server, noop, "completed")
    echo = post(server, "echo", params={"text": "hello"})
    failed = post(server, "boom")
    hanging = post(server, "hang")
    wait_for_status(server, failed["id"], "failed")
    wait_for_status(server, hanging["id"], "running")

    dash = open_dashboard(server)
    page = dash.page
    rows = dash.rows()
    # A page of 50, newest first; "Older tasks" fetches the next page by cursor.
    expect(rows).to_have_count(50)
    expect(rows.first).to_have_attribute("data-task-id", hanging["id"])
    expect(rows.nth(1)).to_have_attribute("data-task-id", failed["id"])
    page.click("#older")
    expect(rows).to_have_count(56)
    expect(page.locator("#older")).to_be_hidden()
    shown = [rows.nth(i).get_attribute("data-task-id") or "" for i in range(56)]
    assert shown == sorted(shown, reverse=True)

    # Several statuses at once.
    page.check('#filters input[value="failed"]')
    page.check('#filters input[value="running"]')
    expect(rows).to_have_count(2)
    expect(page.locator('#task-rows tr[data-status="running"]')).to_have_count(1)
    expect(page.locator('#task-rows tr[data-status="failed"]')).to_have_count(1)
    expect(dash.row(hanging["id"]).locator("progress")).to_have_count(1)
    page.uncheck('#filters input[value="failed"]')
    page.uncheck('#filters input[value="running"]')
    expect(rows).to_have_count(50)

    # By name; then a new task of that name appears at the top, another name does not.
    page.fill("#filter-name", "echo")
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-task-id", echo["id"])
    expect(page.locator("#task-table")).to_have_attribute("aria-busy", "false")
    post(server, "noop")
    newer = post(server, "echo", params={"text": "newer"})
    expect(rows).to_have_count(2)
    expect(rows.first).to_have_attribute("data-task-id", newer["id"])
    expect(rows.first).to_have_attribute("data-status", "completed")

    # A change to a task in the list updates its row in place.
    page.fill("#filter-name", "hang")
    expect(rows).to_have_count(1)
    dash.row(hanging["id"]).locator('button[data-action="cancel"]').click()
    expect(dash.row(hanging["id"])).to_have_attribute("data-status", "cancelled")
    dash.assert_clean()


def test_start_form_follows_the_schemas_and_shows_refusals(
    server_factory: ServerFactory, open_dashboard: OpenDashboard, tmp_path: Path
) -> None:
    server = start_server(server_factory, tmp_path)
    dash = open_dashboard(server, expected_logs=(HTTP_ERROR_LOG.format(422),))
    page = dash.page

    # Fields from each type's JSON Schema: types, defaults, bounds, required marks.
    page.select_option("#start-type", "sleep")
    seconds = page.locator("#param-seconds")
    expect(seconds).to_have_attribute("type", "number")
    expect(seconds).to_have_attribute("min", "0")
    expect(seconds).to_have_attribute("max", "86400")
    assert seconds.evaluate("input => input.required") is True
    expect(page.locator('[data-param="seconds"] .required')).to_have_count(1)
    expect(page.locator("#param-steps")).to_have_value("10")
    expect(page.locator('[data-param="steps"] .required')).to_have_count(0)
    page.select_option("#start-type", "sync_wait")
    expect(page.locator("#param-cooperative")).to_have_attribute("type", "checkbox")
    expect(page.locator("#param-cooperative")).to_be_checked()
    page.select_option("#start-type", "http_request")
    expect(page.locator("#param-method")).to_have_value("POST")  # an enum: a select
    assert page.locator("#param-headers").evaluate("node => node.tagName") == "TEXTAREA"

    # JSON that is not JSON is caught before anything is sent.
    page.select_option("#start-type", "echo")
    page.fill("#param-text", "hi")
    page.fill("#param-extra", "{not json")
    page.click("#start-submit")
    expect(page.locator("#param-extra-error")).to_have_text("This is not valid JSON.")

    # A 422 from the service: its detail, readable, next to the field it is about.
    page.fill("#param-extra", "[1, 2]")
    page.click("#start-submit")
    refusal = page.locator("#start-error")
    expect(refusal).to_be_visible()
    expect(refusal).to_contain_text("params.extra")
    expect(refusal).to_contain_text("valid dictionary")
    expect(page.locator("#param-extra")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#param-extra-error")).to_contain_text("valid dictionary")

    # Fixed, it starts, with the priority and delay given.
    page.fill("#param-extra", '{"k": [1, 2]}')
    page.fill("#start-priority", "7")
    page.fill("#start-delay", "600")
    page.click("#start-submit")
    expect(refusal).to_be_hidden()
    row = dash.rows().first
    expect(row).to_have_attribute("data-status", "pending")
    task_id = row.get_attribute("data-task-id")
    assert task_id is not None
    task = get(server, task_id)
    assert task["params"] == {"text": "hi", "extra": {"k": [1, 2]}}
    assert task["priority"] == 7
    assert task["run_at"] > task["created_at"]

    # Copies: one batch, each copy a row; a refusal still lands on its field.
    page.fill("#param-extra", "[3]")
    page.fill("#start-copies", "5")
    page.click("#start-submit")
    expect(page.locator("#param-extra")).to_have_attribute("aria-invalid", "true")
    page.fill("#param-extra", "{}")
    page.click("#start-submit")
    expect(dash.rows()).to_have_count(6)
    dash.assert_clean()


def test_schedules_pause_resume_and_run_now(
    server_factory: ServerFactory, open_dashboard: OpenDashboard, tmp_path: Path
) -> None:
    server = start_server(
        server_factory, tmp_path, TASKS_MODULES=SCHEDULED_MODULES, TICKS_FILE=str(tmp_path / "t")
    )
    dash = open_dashboard(server)
    page = dash.page
    tick = page.locator('#schedule-list li[data-schedule-id="tick"]')
    expect(page.locator("#schedule-list li")).to_have_count(3)
    expect(tick).to_have_attribute("data-paused", "false")
    expect(tick.locator(".trigger")).to_have_text("every 1 s")

    tick.locator('button[data-action="pause"]').click()
    expect(tick).to_have_attribute("data-paused", "true")
    expect(tick.locator(".badge")).to_have_text("paused")
    schedules = {s["id"]: s for s in call(server, "GET", "/schedules").json()}
    assert schedules["tick"]["paused"] is True
    assert schedules["slow_tick"]["paused"] is False

    # Run now works while paused: a new tick task shows up in the list.
    tick.locator('button[data-action="run"]').click()
    expect(
        page.locator("#task-rows tr").filter(has=page.locator(".task-name", has_text="tick"))
    ).not_to_have_count(0)

    tick.locator('button[data-action="resume"]').click()
    expect(tick).to_have_attribute("data-paused", "false")
    assert {s["id"]: s for s in call(server, "GET", "/schedules").json()}["tick"]["paused"] is False
    dash.assert_clean()


def test_task_types_panel_shows_limits_running_counts_and_pauses(
    server_factory: ServerFactory, open_dashboard: OpenDashboard, tmp_path: Path
) -> None:
    modules = ",".join([*SAMPLE_MODULES, "tests.limited_tasks", "tests.process_tasks"])
    server = start_server(server_factory, tmp_path, TASKS_MODULES=modules)
    notes = str(tmp_path / "notes")
    for _ in range(3):
        call(
            server,
            "POST",
            "/tasks",
            json={"name": "capped", "params": {"path": notes, "seconds": 60}},
        )
    dash = open_dashboard(server)
    page = dash.page
    capped = page.locator('#type-list li[data-type="capped"]')
    expect(capped.locator(".type-limits")).to_have_text("2 / 2 running", timeout=10_000)
    rated = page.locator('#type-list li[data-type="rated"]')
    expect(rated.locator(".type-limits")).to_have_text("0 running · at most 5/s")
    expect(page.locator('#type-list li[data-type="per_account"] .type-limits')).to_contain_text(
        "per account"
    )
    expect(page.locator('#type-list li[data-type="crunch"] .badge')).to_have_text("process")
    # The third capped task waits for the limit, and its row says so.
    waiting = page.locator("#task-rows tr[data-status='pending']").filter(
        has=page.locator(".task-name", has_text="capped")
    )
    expect(waiting.locator(".status-note")).to_have_text("at its concurrency limit")

    echo = page.locator('#type-list li[data-type="echo"]')
    echo.locator('button[data-action="pause"]').click()
    expect(echo).to_have_attribute("data-paused", "true")
    assert {t["name"]: t for t in call(server, "GET", "/task-types").json()}["echo"]["paused"]
    echo.locator('button[data-action="resume"]').click()
    expect(echo).to_have_attribute("data-paused", "false")
    dash.assert_clean()


def test_detail_shows_a_tasks_children_and_leads_to_them_and_back(
    server_factory: ServerFactory, open_dashboard: OpenDashboard, tmp_path: Path
) -> None:
    modules = ",".join([*SAMPLE_MODULES, "tests.workflow_tasks"])
    server = start_server(server_factory, tmp_path, TASKS_MODULES=modules)
    parent = call(server, "POST", "/tasks", json={"name": "fan_out", "params": {"n": 3}}).json()
    dash = open_dashboard(server)
    page = dash.page
    page.locator(f'#task-rows tr[data-task-id="{parent["id"]}"] .task-name').click()
    children = page.locator("#detail-children li")
    expect(children).to_have_count(3)
    expect(page.locator("#detail-children li[data-status='completed']")).to_have_count(3)
    expect(page.locator("#task-detail .detail-section h3", has_text="Children")).to_have_text(
        "Children (3 of 3 completed)"
    )
    children.first.locator(".child-open").click()
    expect(page.locator("#detail-title")).to_have_text("double")
    page.locator("#task-detail .parent-open").click()
    expect(page.locator("#detail-title")).to_have_text("fan_out")
    expect(page.locator("#detail-children li")).to_have_count(3)
    dash.assert_clean()


def test_token_prompt(
    server_factory: ServerFactory, open_dashboard: OpenDashboard, tmp_path: Path
) -> None:
    server = start_server(server_factory, tmp_path, TASKS_API_TOKEN=TOKEN)
    before = post(server, "echo", params={"text": "made before the page opened"})
    dash = open_dashboard(server, expected_logs=(HTTP_ERROR_LOG.format(401),), ready=False)
    page = dash.page

    prompt = page.locator("#token-dialog")
    expect(prompt).to_be_visible()
    expect(page.locator("#live")).to_have_attribute("data-state", "locked")
    page.fill("#token-input", "wrong")
    page.click("#token-submit")
    expect(page.locator("#token-error")).to_contain_text("refused")
    expect(prompt).to_be_visible()

    page.fill("#token-input", TOKEN)
    page.click("#token-submit")
    expect(prompt).to_be_hidden()
    dash.wait_ready()
    expect(dash.row(before["id"])).to_have_attribute("data-status", "completed")
    expect(page.locator("#schedule-list li")).not_to_have_count(0)
    assert page.evaluate("sessionStorage.getItem('tasks.apiToken')") == TOKEN

    # The event stream is authorised too: a new task arrives live.
    after = post(server, "echo", params={"text": "made after"})
    expect(dash.row(after["id"])).to_have_attribute("data-status", "completed")
    dash.assert_clean()


def test_a_read_token_sees_everything_and_gets_no_button_that_writes(
    server_factory: ServerFactory, open_dashboard: OpenDashboard, tmp_path: Path
) -> None:
    server = start_server(
        server_factory, tmp_path, TASKS_API_TOKEN=TOKEN, TASKS_READ_TOKEN=READ_TOKEN
    )
    running = post(server, "sleep", params={"seconds": 60, "steps": 60})
    stopped = post(server, "sleep", params={"seconds": 60})
    call(server, "POST", f"/tasks/{stopped['id']}/cancel")
    done = post(server, "echo", params={"text": "hello"})
    dash = open_dashboard(server, expected_logs=(HTTP_ERROR_LOG.format(401),), ready=False)
    page = dash.page
    page.fill("#token-input", READ_TOKEN)
    page.click("#token-submit")
    dash.wait_ready()

    # Everything is shown...
    expect(dash.row(done["id"])).to_have_attribute("data-status", "completed")
    expect(dash.row(stopped["id"])).to_have_attribute("data-status", "cancelled")
    expect(dash.row(running["id"])).to_have_attribute("data-status", "running")
    expect(page.locator("#schedule-list li")).not_to_have_count(0)
    expect(page.locator("#access-badge")).to_be_visible()
    # ... and nothing that writes: no cancel, retry, pause, run, nor the start form.
    expect(page.locator("#task-rows button")).to_have_count(0)
    # Only the button that reads (a schedule's recent runs) is left, and no New schedule.
    expect(page.locator('#schedule-list button:not([data-action="runs"])')).to_have_count(0)
    expect(page.locator("#schedule-new")).to_be_hidden()
    expect(page.locator("#start-form")).to_be_hidden()
    expect(page.locator("#start-read-only")).to_be_visible()
    dash.row(running["id"]).click()
    expect(page.locator("#detail-progress")).to_be_visible()
    expect(page.locator("#detail-actions button")).to_have_count(0)
    page.click("#detail-close")

    # The admin token brings them back.
    page.click("#forget-token")
    page.fill("#token-input", TOKEN)
    page.click("#token-submit")
    dash.wait_ready()
    expect(page.locator("#access-badge")).to_be_hidden()
    expect(page.locator("#start-form")).to_be_visible()
    expect(page.locator("#start-read-only")).to_be_hidden()
    expect(dash.row(stopped["id"]).locator('[data-action="retry"]')).to_be_visible()
    expect(page.locator('#schedule-list [data-action="run"]')).not_to_have_count(0)
    dash.row(running["id"]).locator('[data-action="cancel"]').click()
    expect(dash.row(running["id"])).to_have_attribute("data-status", "cancelled")
    dash.assert_clean()


def test_event_stream_reconnects_after_a_restart(
    server_factory: ServerFactory, open_dashboard: OpenDashboard, tmp_path: Path
) -> None:
    server = start_server(server_factory, tmp_path)
    dash = open_dashboard(server, expected_logs=(REFUSED_LOG,))  # tries while it is down
    page = dash.page
    page.evaluate("window.sameDocument = true")
    live = page.locator("#live")

    server.stop()  # the stream ends with the server
    expect(live).to_have_attribute("data-state", "reconnecting")
    expect(live).to_contain_text("Reconnecting")
    server.start()
    expect(live).to_have_attribute("data-state", "live")
    task = post(server, "echo", params={"text": "after the restart"})
    expect(dash.row(task["id"])).to_have_attribute("data-status", "completed")
    assert page.evaluate("window.sameDocument") is True
    dash.assert_clean()


def stats_totals(server: Server) -> dict[str, int]:
    series = call(server, "GET", "/stats?minutes=60").json()["series"]
    keys = ("completed", "failed", "cancelled", "retried")
    return {key: sum(item[key] for item in series) for key in keys}


def test_charts_draw_the_last_hour_and_follow_the_event_stream(
    server_factory: ServerFactory, open_dashboard: OpenDashboard, tmp_path: Path
) -> None:
    server = start_server(server_factory, tmp_path)
    ended = [post(server, "noop") for _ in range(3)] + [post(server, "boom") for _ in range(2)]
    for task in ended:
        wait_for_status(server, task["id"], *TERMINAL)
    dash = open_dashboard(server)
    page = dash.page
    page.evaluate("window.sameDocument = true")
    panel = page.locator("#glance-panel")
    finished = page.locator("#chart-finished")
    summary = finished.locator(".chart-summary")

    def shows_the_api_counts() -> None:
        totals = stats_totals(server)
        expect(summary).to_have_text(" · ".join(f"{n} {key}" for key, n in totals.items()))

    # The last hour, one bar per minute, as GET /stats counts it.
    expect(panel).to_have_attribute("data-minutes", "60")
    expect(finished.locator("svg g.chart-bar")).to_have_count(60)
    shows_the_api_counts()
    assert stats_totals(server)["failed"] == 2
    expect(finished.locator("rect.bar-completed")).not_to_have_count(0)
    expect(finished.locator("rect.bar-failed")).not_to_have_count(0)
    expect(page.locator("#chart-depth path.chart-line")).to_have_count(1)
    expect(page.locator("#chart-durations .chart-summary")).to_contain_text("p50")
    expect(page.locator("#chart-durations path.line-p50")).not_to_have_count(0)
    expect(finished.locator(".axis-start")).not_to_have_text("")
    # Each task type's runs over the same window, beside its limits.
    boom = page.locator('#type-list li[data-type="boom"] .type-stats')
    expect(boom).to_have_text(re.compile(r"^2 runs · 2 failed · p50 .+ · p95 .+"))
    expect(page.locator('#type-list li[data-type="noop"] .type-stats')).to_contain_text(
        "3 runs · 0 failed"
    )
    expect(page.locator('#type-list li[data-type="hang"] .type-stats')).to_have_text(
        "no runs in the last hour"
    )

    # Tasks that end later arrive on the event stream: the charts follow, no reload.
    more = [post(server, "noop") for _ in range(4)] + [post(server, "boom")]
    for task in more:
        wait_for_status(server, task["id"], *TERMINAL)
    expect(page.locator('#type-list li[data-type="noop"] .type-stats')).to_contain_text(
        "7 runs · 0 failed"
    )
    shows_the_api_counts()
    assert stats_totals(server)["failed"] == 3

    # A day: 120 bars of 12 minutes each.
    page.select_option("#glance-window", "1440")
    expect(panel).to_have_attribute("data-minutes", "1440")
    expect(finished.locator("svg g.chart-bar")).to_have_count(120)
    expect(finished.locator(".chart-title")).to_have_text("Finished per 12 minutes")
    expect(boom).to_contain_text("3 runs · 3 failed")
    assert page.evaluate("window.sameDocument") is True
    dash.assert_clean()


def seed_an_hour(db: Path) -> None:
    """The per-minute counts and queue depths of an hour that ended a minute ago, written
    as the service writes them (tasks that ran before this test's server existed): what the
    charts of the screenshot show before its own tasks."""
    rng = random.Random(11)
    now = minute_of(time.time())
    types = {  # name: (share of tasks, median seconds)
        "send_email": (0.45, 0.35),
        "http_request": (0.3, 0.09),
        "process_csv": (0.15, 2.5),
        "sleep": (0.1, 6.0),
    }
    rows: dict[tuple[int, str, str, int], int] = {}
    depths = []
    for back in range(59, 0, -1):
        minute = now - back * 60
        busy = 1 + 1.6 * math.exp(-(((back - 24) / 7) ** 2))  # a burst 24 minutes ago
        for name, (share, median) in types.items():
            for _ in range(int(rng.gauss(40 * busy * share, 3))):
                seconds = rng.lognormvariate(math.log(median * (1.5 if busy > 2 else 1)), 0.5)
                outcome = rng.choices(["completed", "failed", "retried"], [0.95, 0.02, 0.03])[0]
                key = (minute, name, outcome, duration_bucket(seconds))
                rows[key] = rows.get(key, 0) + 1
        depths.append((minute, max(0, int(rng.gauss(45 * (busy - 1), 2))), minute + 55.0))
    with sqlite3.connect(db, timeout=15) as conn:
        conn.executemany(
            "INSERT INTO stats_minutes (minute, name, outcome, bucket, shard, n) "
            "VALUES (?, ?, ?, ?, '', ?)",
            [(*key, n) for key, n in rows.items()],
        )
        conn.executemany(
            "INSERT INTO stats_depth (minute, depth, sampled_at) VALUES (?, ?, ?)", depths
        )
    conn.close()


def test_a_busy_dashboard_screenshot(
    server_factory: ServerFactory, open_dashboard: OpenDashboard, tmp_path: Path
) -> None:
    """Tasks in every status, one running, and the hour before: docs/dashboard.png."""
    # Its webhook goes to a closed port on loopback, retried: loopback must be allowed.
    server = start_server(
        server_factory, tmp_path, TASKS_HTTP_ALLOW="127.0.0.1/32", TASKS_MODULES=""
    )  # the built-in task types only, as a service of one's own starts
    seed_an_hour(Path(server.db))
    csv = "region,units,price\n" + "".join(
        f"{region},{units},{price}\n"
        for region, units, price in [("north", 12, 9.5), ("south", 7, 11.0), ("east", 30, 8.25)]
        * 40
    )
    upload = call(server, "POST", "/files", files={"file": ("sales.csv", csv, "text/csv")})
    assert upload.status_code == 201, upload.text
    done = [
        post(server, "process_csv", params={"file_id": upload.json()["id"]}),
        post(server, "sleep", params={"seconds": 0.2, "steps": 2}),
        post(server, "send_email", params={"to": "ops@example.org", "subject": "Hi", "body": "."}),
        post(server, "http_request", params={"url": "http://127.0.0.1:9/hooks/paid", "json": {}}),
    ]
    stopped = post(server, "sleep", params={"seconds": 3600, "steps": 10})
    for task in done:  # finished, or waiting for a retry after a failed attempt
        wait_for(server, task["id"], lambda t: t["status"] in TERMINAL or t["error"] is not None)
    call(server, "POST", f"/tasks/{stopped['id']}/cancel")
    post(server, "sleep", params={"seconds": 600}, delay=900)
    call(server, "POST", "/schedules/purge_tasks/run")
    running = post(server, "sleep", params={"seconds": 6, "steps": 100})

    dash = open_dashboard(server)
    page = dash.page
    page.wait_for_function(
        """id => Number(document.querySelector(`tr[data-task-id="${id}"] progress`)
                 ?.getAttribute("aria-valuenow")) >= 40""",
        arg=running["id"],
    )
    expect(dash.rows()).to_have_count(8)
    completed_bars = page.locator("#chart-finished rect.bar-completed")
    expect(completed_bars).not_to_have_count(0)
    assert completed_bars.count() >= 58  # the seeded hour, and this minute (or the last)
    expect(page.locator("#chart-finished rect.bar-failed")).not_to_have_count(0)
    expect(page.locator('#type-list li[data-type="send_email"] .type-stats')).to_contain_text(
        "failed · p50"
    )
    expect(page.locator('#task-rows tr[data-status="failed"]')).not_to_have_count(0)
    expect(page.locator('#task-rows tr[data-status="cancelled"]')).to_have_count(1)
    page.set_viewport_size({"width": 1360, "height": 600})  # the page's own height, no more
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "dashboard.png", full_page=True, animations="disabled")
    if os.environ.get("UPDATE_DOCS_SCREENSHOT"):
        DOCS_SCREENSHOT.parent.mkdir(exist_ok=True)
        page.screenshot(path=DOCS_SCREENSHOT, full_page=True, animations="disabled")
    call(server, "POST", f"/tasks/{running['id']}/cancel")
    dash.assert_clean()
