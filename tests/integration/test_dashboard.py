"""The web dashboard in headless Chromium against a real fleet (Mosquitto, controller, device
daemons): live device presence and task progress without a reload, read-scope tokens that see
no forms and get 403 from every POST, the pages in Chinese, and screenshots kept as artifacts
(tests/artifacts/screenshots/)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.dashboard_kit import DashboardFleet, running_fleet, screenshot

pytestmark = pytest.mark.integration
LIVE = 20_000  # ms a live change may take on a loaded 2-core machine (Playwright's expect polls)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DashboardFleet]:
    with running_fleet(tmp_path_factory.mktemp("dashboard"), ("pc-01",)) as instance:
        yield instance


def _mark_loaded(page: Any) -> None:
    """Tag the document: the tag is gone if the page is ever reloaded."""
    page.evaluate("window.__fleetNoReload = 'still-here'")


def _not_reloaded(page: Any) -> bool:
    return bool(page.evaluate("window.__fleetNoReload === 'still-here'"))


def test_a_killed_device_turns_offline_on_the_open_page(fleet: DashboardFleet, browser: Any) -> None:
    from playwright.sync_api import expect

    victim = f"pc-{uuid.uuid4().hex[:6]}"  # a device of its own: the test may run again on this fleet
    fleet.start_device(victim)
    fleet.controller.wait_device(victim, "online", timeout=30)
    page = fleet.sign_in(browser, "operate")
    try:
        page.goto(f"{fleet.url}/devices")
        row = page.locator(f"#device-{victim}")
        expect(row).to_have_attribute("data-status", "online")
        _mark_loaded(page)
        page.wait_for_function("document.querySelector('[sse-connect]') && htmx")  # the stream is wired
        fleet.devices[victim].kill()
        expect(row).to_have_attribute("data-status", "offline", timeout=LIVE)
        expect(row.locator(".status")).to_have_text("offline")
        expect(page.locator("#device-pc-01")).to_have_attribute("data-status", "online")
        assert _not_reloaded(page), "the page was reloaded; the row must change in place"
        screenshot(page, "devices-en")
    finally:
        page.context.close()


def test_a_task_page_follows_progress_live_until_succeeded(fleet: DashboardFleet, browser: Any) -> None:
    from playwright.sync_api import expect

    page = fleet.sign_in(browser, "operate")
    try:
        task = fleet.controller.create_task("pc-01", "sleep", params={"seconds": 3, "steps": 3})
        page.goto(f"{fleet.url}/tasks/{task['id']}")
        _mark_loaded(page)
        progress = page.locator("#task-progress")
        # Some value strictly between 0 and 100 shows while it runs, then 100 and `succeeded`.
        page.wait_for_function(
            """() => { const bar = document.querySelector('#task-progress');
                       const status = document.querySelector('#task-status');
                       const value = Number(bar && bar.getAttribute('value'));
                       return status && status.dataset.status === 'running' && value > 0 && value < 100; }""",
            timeout=LIVE,
        )
        expect(page.locator("#task-status")).to_have_attribute("data-status", "succeeded", timeout=LIVE)
        expect(progress).to_have_attribute("value", "100")
        assert page.locator("#timeline tr[data-event=progress]").count() >= 2
        expect(page.locator("#timeline tr[data-event=succeeded]")).to_have_count(1)
        assert _not_reloaded(page), "the page was reloaded; the timeline must grow in place"
        screenshot(page, "task-en")
        # Run again (operate scope): a new task page, which ends succeeded too.
        page.click("#retry-task")
        page.wait_for_url(re.compile(r".*/tasks/(?!" + task["id"] + r")[0-9a-f]+$"))
        expect(page.locator("#task-status")).to_have_attribute("data-status", "succeeded", timeout=LIVE)
    finally:
        page.context.close()


PAGES = ["/", "/devices", "/devices/pc-01", "/tasks"]


def test_a_read_scope_token_sees_no_forms_and_cannot_post(fleet: DashboardFleet, browser: Any) -> None:
    running = fleet.controller.create_task("pc-01", "sleep", params={"seconds": 30, "steps": 2})
    done = fleet.controller.create_task("pc-01", "echo", params={"message": "hi"})
    fleet.controller.wait_task(done["id"])
    page = fleet.sign_in(browser, "read")
    try:
        for path in [*PAGES, f"/tasks/{running['id']}", f"/tasks/{done['id']}"]:
            page.goto(f"{fleet.url}{path}")
            assert page.locator("nav.main").is_visible(), path
            # Signing out changes nothing in the fleet: the only POST form a reader gets.
            assert page.locator("form[method=post]:not(.signout)").count() == 0, path
            assert page.locator("#cancel-task, #retry-task, button.danger").count() == 0, path
        # The server refuses anyway, CSRF value and all.
        reader = fleet.http("read")
        csrf = reader.cookies["fleet_csrf"]
        for action in ("cancel", "retry"):
            task_id = running["id"] if action == "cancel" else done["id"]
            answer = reader.post(f"/tasks/{task_id}/{action}", data={"csrf_token": csrf})
            assert answer.status_code == 403, (action, answer.text)
        still = fleet.controller.task(running["id"])
        assert still is not None and still["status"] != "canceled"
        # An operator without the session's CSRF value is refused too; with it, the cancel works.
        operator = fleet.http("operate")
        assert operator.post(f"/tasks/{running['id']}/cancel", data={}).status_code == 403
        answer = operator.post(f"/tasks/{running['id']}/cancel", data={"csrf_token": operator.cookies["fleet_csrf"]})
        assert answer.status_code == 303, answer.text
        fleet.controller.wait_task(running["id"], {"canceled"})
    finally:
        page.context.close()


def test_pages_speak_chinese_from_the_browser_and_the_switch(fleet: DashboardFleet, browser: Any) -> None:
    from playwright.sync_api import expect

    page = fleet.sign_in(browser, "operate", locale="zh_CN")  # Accept-Language: zh-CN
    try:
        nav = page.locator("nav.main")
        expect(nav).to_contain_text("设备")
        expect(nav).to_contain_text("任务")
        assert page.locator("html").get_attribute("lang") == "zh-CN"
        page.goto(f"{fleet.url}/devices")
        expect(page.locator("#devices thead")).to_contain_text("最近心跳")
        screenshot(page, "devices-zh_CN")
        done = fleet.controller.create_task("pc-01", "sleep", params={"seconds": 0.3, "steps": 3})
        fleet.controller.wait_task(done["id"])
        page.goto(f"{fleet.url}/tasks/{done['id']}")
        expect(page.locator("#task-status")).to_have_text("成功")
        screenshot(page, "task-zh_CN")
        # The switch in the nav wins over the browser's language, and comes back.
        page.click("nav.side a.lang[lang=en]")
        expect(page.locator("nav.main")).to_contain_text("Devices")
        expect(page.locator("#task-status")).to_have_text("succeeded")
        page.click("nav.side a.lang[lang=zh_CN]")
        expect(page.locator("nav.main")).to_contain_text("设备")
    finally:
        page.context.close()
