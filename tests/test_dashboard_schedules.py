"""The dashboard's schedules panel in a real browser: make, refuse, edit, pause and delete a
schedule, and open one of its recent runs (the browser and page fixtures of test_dashboard)."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests import test_dashboard as dashboard
from tests.harness import ServerFactory, wait_until
from tests.test_dashboard import HOSTILE, HTTP_ERROR_LOG, OpenDashboard, call, start_server

pytestmark = pytest.mark.slow

# The browser and the page, as test_dashboard opens them.
chromium = dashboard.chromium
open_dashboard = dashboard.open_dashboard


def test_make_refuse_edit_pause_and_delete_a_schedule(
    server_factory: ServerFactory, open_dashboard: OpenDashboard, tmp_path: Path
) -> None:
    server = start_server(server_factory, tmp_path)
    dash = open_dashboard(server, expected_logs=(HTTP_ERROR_LOG.format(422),))
    page = dash.page
    form = page.locator("#schedule-form")
    expect(form).to_be_hidden()

    page.click("#schedule-new")
    expect(form).to_be_visible()
    page.fill("#schedule-id", "greeting")
    page.select_option("#schedule-task", "echo")
    expect(page.locator("#schedule-params-hint")).to_contain_text("text (required)")
    page.fill("#schedule-params", '{"text": "' + HOSTILE + '"}')
    page.fill("#schedule-every", "0.5")
    page.click("#schedule-submit")
    refusal = page.locator("#schedule-error")
    expect(refusal).to_be_visible()
    expect(refusal).to_contain_text("every")
    expect(page.locator("#schedule-every")).to_have_attribute("aria-invalid", "true")
    assert call(server, "GET", "/schedules/greeting").status_code == 404  # nothing stored

    page.fill("#schedule-every", "1")
    page.click("#schedule-submit")
    expect(form).to_be_hidden()
    item = page.locator('#schedule-list li[data-schedule-id="greeting"]')
    expect(item).to_have_attribute("data-source", "api")
    expect(item.locator(".trigger")).to_have_text("every 1 s")
    expect(item.locator(".params-summary")).to_contain_text(HOSTILE)  # as text, never HTML
    stored = call(server, "GET", "/schedules/greeting").json()
    assert stored["every"] == 1 and stored["params"]["text"] == HOSTILE
    in_code = page.locator('#schedule-list li[data-schedule-id="purge_tasks"]')
    expect(in_code).to_have_attribute("data-source", "code")
    expect(in_code.locator('button[data-action="edit"]')).to_have_count(0)
    expect(in_code.locator('button[data-action="delete"]')).to_have_count(0)

    # Its recent runs, one of which opens in the detail drawer.
    wait_until(
        lambda: call(server, "GET", "/tasks", params={"schedule_id": "greeting"}).json()["items"],
        timeout=10,
        what="a first run",
    )
    item.locator('button[data-action="runs"]').click()
    run = item.locator(".schedule-runs li[data-task-id]").first
    expect(run.locator(".badge")).to_have_text("completed")
    run_id = run.get_attribute("data-task-id")
    run.locator("button").click()
    expect(page.locator("#task-detail")).to_be_visible()
    expect(page.locator("#detail-id")).to_have_text(str(run_id))
    page.click("#detail-close")
    expect(item.locator(".last-run")).to_be_visible()

    # Edit: a cron in Paris, then pause.
    item.locator('button[data-action="edit"]').click()
    expect(page.locator("#schedule-form-title")).to_have_text("Edit greeting")
    expect(page.locator("#schedule-id")).to_be_disabled()
    expect(page.locator("#schedule-every")).to_have_value("1")
    page.select_option("#schedule-kind", "cron")
    page.fill("#schedule-cron", "30 7 * * 1-5")
    page.fill("#schedule-tz", "Europe/Paris")
    page.fill("#schedule-params", '{"text": "good morning"}')
    page.click("#schedule-submit")
    expect(form).to_be_hidden()
    expect(item.locator(".trigger")).to_have_text("cron '30 7 * * 1-5' (Europe/Paris)")
    stored = call(server, "GET", "/schedules/greeting").json()
    assert stored["cron"] == "30 7 * * 1-5" and stored["tz"] == "Europe/Paris"
    assert stored["every"] is None and stored["params"]["text"] == "good morning"
    item.locator('button[data-action="pause"]').click()
    expect(item).to_have_attribute("data-paused", "true")
    assert call(server, "GET", "/schedules/greeting").json()["paused"] is True

    # Delete takes a second click.
    delete = item.locator('button[data-action="delete"]')
    delete.click()
    expect(delete).to_have_text("Really delete?")
    assert call(server, "GET", "/schedules/greeting").status_code == 200
    delete.click()
    expect(item).to_have_count(0)
    assert call(server, "GET", "/schedules/greeting").status_code == 404
    dash.assert_clean()
