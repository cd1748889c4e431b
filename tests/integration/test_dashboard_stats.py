"""The overview's success-rate panel in headless Chromium against a real fleet (Mosquitto,
controller, a device daemon): the figures match what the test's own tasks did, follow a new
success and a new failure without a reload, and the panel speaks Chinese when the browser does.
A screenshot is kept (tests/artifacts/screenshots/overview-stats-*.png)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.dashboard_kit import DashboardFleet, running_fleet, screenshot

pytestmark = pytest.mark.integration
LIVE = 20_000  # ms a live change may take on a loaded 2-core machine (Playwright's expect polls)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DashboardFleet]:
    with running_fleet(tmp_path_factory.mktemp("dashboard-stats"), ("pc-01",)) as instance:
        yield instance


def _finished_tasks(fleet: DashboardFleet) -> tuple[int, int]:
    """(succeeded, finished) of pc-01's tasks, counted by the test from the task list."""
    items = fleet.controller.api.get("/api/v1/tasks", params={"device_id": "pc-01", "limit": 500}).json()["items"]
    final = [t for t in items if t["finished_at"] is not None]
    return sum(t["status"] == "succeeded" for t in final), len(final)


def _percent(succeeded: int, finished: int) -> str:
    return f"{succeeded / finished * 100:.1f}%"


def test_success_rates_follow_the_fleet_live(fleet: DashboardFleet, browser: Any) -> None:
    from playwright.sync_api import expect

    controller = fleet.controller
    done = controller.create_task("pc-01", "echo", params={"message": "one"})
    controller.wait_task(done["id"])
    page = fleet.sign_in(browser, "read")
    try:
        page.goto(f"{fleet.url}/")
        page.evaluate("window.__fleetNoReload = 'still-here'")
        row = page.locator("table[data-table=per_device] tr[data-key=pc-01]")
        succeeded, finished = _finished_tasks(fleet)
        expect(row).to_have_attribute("data-finished", str(finished), timeout=LIVE)
        expect(row).to_have_attribute("data-succeeded", str(succeeded))
        expect(row.locator("td").nth(2)).to_have_text(_percent(succeeded, finished))

        ok = controller.create_task("pc-01", "echo", params={"message": "two"})
        bad = controller.create_task("pc-01", "sleep", params={"seconds": 5, "steps": 1}, timeout=0.3)
        assert controller.wait_task(ok["id"])["status"] == "succeeded"
        assert controller.wait_task(bad["id"])["status"] == "timed_out"
        expect(row).to_have_attribute("data-finished", str(finished + 2), timeout=LIVE)
        expect(row).to_have_attribute("data-succeeded", str(succeeded + 1))
        expect(row.locator("td").nth(1)).to_have_text(_percent(succeeded + 1, finished + 2))  # last hour
        fleet_day = page.locator("[data-rate=fleet-24h]")
        expect(fleet_day).to_have_attribute("data-finished", str(finished + 2))
        expect(fleet_day.locator(".figure")).to_have_text(_percent(succeeded + 1, finished + 2))
        assert page.evaluate("window.__fleetNoReload === 'still-here'"), "the page was reloaded"
        screenshot(page, "overview-stats-en")
    finally:
        page.context.close()


def test_success_rates_in_chinese(fleet: DashboardFleet, browser: Any) -> None:
    from playwright.sync_api import expect

    page = fleet.sign_in(browser, "read", locale="zh_CN")
    try:
        page.goto(f"{fleet.url}/")
        expect(page.locator("#success-rates h2")).to_have_text("成功率")
        expect(page.locator("table[data-table=per_device] th").first).to_have_text("设备", timeout=LIVE)
        expect(page.locator("[data-rate=fleet-1h] .label")).to_contain_text("最近一小时")
        screenshot(page, "overview-stats-zh")
    finally:
        page.context.close()
