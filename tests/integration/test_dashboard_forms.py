"""The dashboard's forms in headless Chromium against a running fleet: Mosquitto, the controller,
a device daemon driving real Chromium on the reference site (tests/dashboard_kit.py).

A chat task sent from the form ends `succeeded` on screen; the QR panel shows the QR code the
site showed the device (decoded here and checked against the site's scan link) and its code
field completes a QR+SMS login; a video and cover chosen in the browser reach the site intact;
a bad field gets its reason next to it (English and Chinese); a read-scope token sees no form
and its POSTs get 403. Screenshots of the send form and the QR panel, in both languages, are
kept in tests/artifacts/screenshots/. One fleet for the whole module.
"""

from __future__ import annotations

import hashlib
import html
import itertools
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import segno
from playwright.sync_api import expect

from tests.dashboard_kit import CHROMIUM, SCREENSHOTS, DashboardFleet, running_fleet, screenshot
from tests.harness import Controller, Process, wait_for
from tests.integration.test_reference_site import encodes, png_pixels, qr_modules
from tests.ports import free_port, port_open

pytestmark = pytest.mark.integration

TIMEOUT_MS = 60_000  # a browser task on a busy 2-core machine: Chromium starts on the device
_serial = itertools.count(1)


@dataclass
class Fleet:
    dash: DashboardFleet
    site_url: str
    site: httpx.Client

    @property
    def controller(self) -> Controller:
        return self.dash.controller

    def records(self) -> dict[str, list[dict[str, Any]]]:
        return self.site.get("/_records").json()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    work = tmp_path_factory.mktemp("dashforms")
    port = free_port()
    site = Process("reference-site", [sys.executable, "-m", "device.platforms.reference.site", "--port", str(port),
                                      "--state-dir", str(work / "site")], work)
    site.start()
    try:
        wait_for(lambda: port_open(port) or not site.running, 20, what="the reference site to listen")
        assert site.running, site.log_tail()
        site_url = f"http://127.0.0.1:{port}"
        with running_fleet(work, device_ids=()) as dash, httpx.Client(base_url=site_url, timeout=10) as api:
            dash.start_device("pc-web", platform_urls={"reference": site_url}, browser_path=str(CHROMIUM),
                              public_api_url=dash.url)
            dash.controller.wait_device("pc-web", "online", timeout=30)
            made = dash.controller.api.post("/api/v1/accounts", json={"name": "alice", "platform": "reference",
                                                                       "device_id": "pc-web"})
            assert made.status_code == 201, made.text
            yield Fleet(dash, site_url, api)
    finally:
        site.kill()


def waiting_for(controller: Controller, task_id: str, what: str) -> dict[str, Any]:
    return wait_for(lambda: (t := controller.task(task_id)) and (d := t.get("details") or {}).get("waiting_for") == what
                    and d, 60, 0.1, f"task {task_id} waiting for {what}")


@pytest.fixture(scope="module", autouse=True)
def _patient_expect() -> Iterator[None]:
    """Assertions on the page wait up to 20 s (Playwright's default is 5 s): a shared 2-core
    machine can be that slow to answer a form; waits on the device say so themselves."""
    expect.set_options(timeout=20_000)
    yield
    expect.set_options(timeout=5_000)


@pytest.fixture(scope="module")
def alice(fleet: Fleet) -> str:
    """alice logged in once for the module, the way test_browser logs in (REST + the phone link)."""
    controller = fleet.controller
    task = controller.create_task(None, "login", account="alice", params={"platform": "reference", "wait": 60})
    token = parse_qs(urlsplit(waiting_for(controller, task["id"], "scan")["scan_url"]).query)["token"][0]
    assert fleet.site.post("/_phone/approve", data={"token": token, "account": "alice"}).status_code == 200
    assert controller.wait_task(task["id"], timeout=60)["status"] == "succeeded"
    return "alice"


@pytest.fixture
def operator_page(fleet: Fleet, browser: Any) -> Iterator[Any]:
    page = fleet.dash.sign_in(browser, "operate")
    page.set_default_timeout(TIMEOUT_MS)
    yield page
    page.context.close()


def panel_screenshot(page: Any, name: str) -> None:
    """The QR panel as the operator sees it: the window scrolled to it (the page below it, the
    timeline, can be long)."""
    # In one step of the page's own JS: the live part may be swapped anew between two calls.
    page.wait_for_function("() => { const p = document.querySelector('#login-panel');"
                           " if (p === null) return false; p.scrollIntoView(); return true; }")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))


def task_id_of(page: Any) -> str:
    page.wait_for_load_state()
    if "/tasks/" not in page.url:  # a refused form: say why
        errors = page.locator(".field-error:not(:empty), .form-error, main").all_inner_texts() or page.content()[:2000]
        raise AssertionError(f"the form was not accepted ({page.url}): {errors}")
    page.wait_for_url(re.compile(r".*/tasks/[^/]+$"))
    return page.url.rsplit("/", 1)[1]


def test_chat_sent_from_the_form_ends_succeeded_on_screen(fleet: Fleet, alice: str, operator_page: Any) -> None:
    page = operator_page
    message = f"hello from the dashboard {next(_serial)} {os.urandom(3).hex()}"
    page.goto(f"{fleet.dash.url}/send?kind=chat")
    page.fill("#chat-account", alice)
    page.fill("#chat-to", "carol")
    page.fill("#chat-message", message)
    page.click("#send-chat-submit")
    task_id = task_id_of(page)
    expect(page.locator("#task-status")).to_have_attribute("data-status", "succeeded", timeout=TIMEOUT_MS)
    assert fleet.controller.task(task_id)["status"] == "succeeded"  # type: ignore[index]
    assert (alice, "carol", message) in [(m["account"], m["to"], m["message"]) for m in fleet.records()["messages"]]


def _qr_shown(page: Any) -> bytes:
    """The QR picture the panel shows, as the browser fetched it."""
    expect(page.locator("#login-qr")).to_be_visible(timeout=TIMEOUT_MS)  # the device starts Chromium first
    # By selector each time: the live part of the page may be swapped in anew meanwhile.
    page.wait_for_function("() => { const i = document.querySelector('#login-qr');"
                           " return i !== null && i.complete && i.naturalWidth > 0; }")
    answer = page.request.get(page.eval_on_selector("#login-qr", "img => img.src"))
    assert answer.status == 200 and answer.headers["content-type"] == "image/png"
    return answer.body()


def test_qr_panel_shows_the_code_and_its_field_completes_a_qr_sms_login(fleet: Fleet, operator_page: Any,
                                                                       browser: Any) -> None:
    page, controller = operator_page, fleet.controller
    account = f"bob-{next(_serial)}-{os.urandom(2).hex()}"
    assert fleet.site.post("/_admin/config", json={"sms_required": [account], "fail": {}}).status_code == 200
    # Bind the account with the accounts page's form.
    page.goto(f"{fleet.dash.url}/accounts")
    page.fill("#bind-name", account)
    page.fill("#bind-platform", "reference")
    page.fill("#bind-device_id", "pc-web")
    page.click("#bind-account-submit")
    expect(page.locator(f"tr[data-account='{account}'] [data-login-status]")).to_have_attribute("data-login-status", "unknown")

    page.goto(f"{fleet.dash.url}/send?kind=login&account={account}")
    expect(page.locator("#login-account")).to_have_value(account)
    page.fill("#login-wait", "60")
    page.click("#send-login-submit")
    task_id = task_id_of(page)
    try:
        _scan_and_enter_the_code(fleet, page, browser, task_id, account)
    finally:  # a failure must not leave the login holding the device's browser for a minute
        if (left := controller.task(task_id)) and left["status"] in ("queued", "dispatched", "accepted", "running"):
            controller.api.post(f"/api/v1/tasks/{task_id}/cancel")
    page.goto(f"{fleet.dash.url}/accounts")
    expect(page.locator(f"tr[data-account='{account}'] [data-login-status]")).to_have_attribute(
        "data-login-status", "logged_in")


def _scan_and_enter_the_code(fleet: Fleet, page: Any, browser: Any, task_id: str, account: str) -> None:
    controller = fleet.controller
    picture = _qr_shown(page)  # appeared live: the page was loaded before the device reported it
    scan_url = waiting_for(controller, task_id, "scan")["scan_url"]
    token = parse_qs(urlsplit(scan_url).query)["token"][0]
    # The picture on screen is a QR code of the site's own scan link for this login.
    assert encodes(qr_modules(png_pixels(picture)), f"{fleet.site_url}/_phone/scan?token={token}")
    panel_screenshot(page, "dashboard-qr-panel-en")
    chinese = fleet.dash.sign_in(browser, "operate", locale="zh_CN")
    try:
        chinese.goto(f"{fleet.dash.url}/tasks/{task_id}")
        expect(chinese.locator("#login-panel h2")).to_have_text("扫描二维码")
        expect(chinese.locator("#login-qr")).to_be_visible()
        panel_screenshot(chinese, "dashboard-qr-panel-zh_CN")
    finally:
        chinese.context.close()

    # The phone scans it (the site's approval page, as the owner would); the site then asks for the SMS code.
    phone = fleet.site.get(scan_url)
    assert re.findall(r'name="account" value="([^"]*)"', phone.text) == [html.escape(account)]
    assert fleet.site.post("/_phone/approve", data={"token": token, "account": account}).status_code == 200
    expect(page.locator("#login-code")).to_be_visible(timeout=TIMEOUT_MS)
    panel_screenshot(page, "dashboard-sms-code-en")
    code = fleet.site.get("/_phone/sms", params={"account": account}).json()["code"]
    wrong = "000000" if code != "000000" else "111111"
    page.fill("#login-code", wrong)
    page.click("#login-code-submit")
    expect(page.locator("#wrong-code")).to_be_visible(timeout=TIMEOUT_MS)
    page.fill("#login-code", code)
    page.click("#login-code-submit")
    expect(page.locator("#task-status")).to_have_attribute("data-status", "succeeded", timeout=TIMEOUT_MS)
    expect(page.locator("#login-panel")).to_have_count(0, timeout=TIMEOUT_MS)
    done = controller.task(task_id)
    assert done is not None and done["result"]["method"] == "qr+code", done
    assert (account, "qr+sms") in [(r["account"], r["method"]) for r in fleet.records()["logins"]]


def test_upload_from_the_browser_form_reaches_the_site(fleet: Fleet, alice: str, operator_page: Any,
                                                       tmp_path: Path) -> None:
    page = operator_page
    video = tmp_path / "clip.mp4"
    video.write_bytes(os.urandom(300_000))
    cover = tmp_path / "cover.png"
    segno.make(f"cover {os.urandom(4).hex()}").save(str(cover), scale=8)
    title = f"Launch {next(_serial)} {os.urandom(3).hex()}"
    page.goto(f"{fleet.dash.url}/send?kind=upload")
    page.fill("#upload-account", alice)
    page.fill("#upload-title", title)
    page.fill("#upload-tags", "fleet, 测试")
    page.fill("#upload-publish_at", "2030-01-02T03:04")
    page.set_input_files("#upload-cover", str(cover))
    page.set_input_files("#upload-video", str(video))
    page.click("#send-upload-submit")
    task_id = task_id_of(page)
    expect(page.locator("#task-status")).to_have_attribute("data-status", "succeeded", timeout=TIMEOUT_MS)
    task = fleet.controller.task(task_id)
    assert task is not None and task["params"]["size"] == video.stat().st_size
    [upload] = [u for u in fleet.records()["uploads"] if u["title"] == title]
    assert upload["account"] == alice and upload["tags"] == ["fleet", "测试"]
    assert upload["video_sha256"] == hashlib.sha256(video.read_bytes()).hexdigest()
    assert upload["cover_sha256"] == hashlib.sha256(cover.read_bytes()).hexdigest()
    assert upload["publish_at"].startswith("2030-01-02T03:04")


def test_bad_input_is_explained_next_to_the_field(fleet: Fleet, operator_page: Any, browser: Any) -> None:
    page = operator_page
    before = fleet.controller.api.get("/api/v1/tasks", params={"type": "login"}).json()["total"]
    page.goto(f"{fleet.dash.url}/send?kind=login")
    screenshot(page, "dashboard-send-form-en")
    page.fill("#login-account", "alice")
    page.fill("#login-device_id", "no-such-pc")
    page.select_option("#login-method", "sms")
    page.click("#send-login-submit")
    expect(page.locator("#login-device_id-error")).to_have_text("No device has this id.")
    expect(page.locator("#login-phone-error")).to_contain_text("phone number")
    expect(page.locator("#login-account")).to_have_value("alice")  # what was typed stays
    page.fill("#login-device_id", "")
    page.fill("#login-phone", "+86 138 0000 0000")
    page.fill("#login-account", "nobody-here")
    page.click("#send-login-submit")
    expect(page.locator("#login-account-error")).to_contain_text("Accounts page")
    expect(page.locator("#login-device_id-error")).to_have_text("")
    # An upload form without a title or a video: no file is stored, both fields say why.
    page.goto(f"{fleet.dash.url}/send?kind=upload")
    page.fill("#upload-account", "alice")
    page.click("#send-upload-submit")
    expect(page.locator("#upload-title-error")).not_to_be_empty()
    expect(page.locator("#upload-video-error")).not_to_be_empty()
    assert fleet.controller.api.get("/api/v1/tasks", params={"type": "login"}).json()["total"] == before

    chinese = fleet.dash.sign_in(browser, "operate", locale="zh_CN")
    try:
        chinese.set_default_timeout(TIMEOUT_MS)
        chinese.goto(f"{fleet.dash.url}/send?kind=login")
        screenshot(chinese, "dashboard-send-form-zh_CN")
        chinese.fill("#login-account", "alice")
        chinese.fill("#login-wait", "-5")
        chinese.click("#send-login-submit")
        expect(chinese.locator("#login-wait-error")).to_have_text("必须大于 0。")
    finally:
        chinese.context.close()


def test_a_read_scope_token_sees_no_forms_and_its_posts_are_refused(fleet: Fleet, browser: Any) -> None:
    page = fleet.dash.sign_in(browser, "read")
    try:
        for path in ("/send?kind=chat", "/send?kind=upload", "/send?kind=broadcast", "/accounts"):
            page.goto(f"{fleet.dash.url}{path}")
            expect(page.locator("main h1")).to_be_visible()
            assert page.locator("main form[method=post]").count() == 0, path
        expect(page.locator("tr[data-account='alice']")).to_be_visible()
    finally:
        page.context.close()
    client = fleet.dash.http("read")
    csrf = client.cookies["fleet_csrf"]
    try:
        for path, data in [("/send/chat", {"account": "alice", "to": "carol", "message": "hi"}),
                           ("/send/login", {"account": "alice"}), ("/send/broadcast", {"type": "ping"}),
                           ("/accounts/bind", {"name": "x", "platform": "reference", "device_id": "pc-web"}),
                           ("/accounts/forget", {"name": "alice"}), ("/tasks/some-task/login-code", {"code": "1"})]:
            answer = client.post(path, data={**data, "csrf_token": csrf})
            assert answer.status_code == 403, (path, answer.status_code)
        upload = client.post("/send/upload", data={"csrf_token": csrf, "account": "alice", "title": "t"},
                             files={"video": ("v.mp4", b"x" * 1000, "video/mp4")})
        assert upload.status_code == 403
    finally:
        client.close()
    assert fleet.controller.api.get("/api/v1/accounts/alice").status_code == 200  # nothing was forgotten


def test_broadcast_form_explains_bad_json_then_sends(fleet: Fleet, operator_page: Any) -> None:
    page = operator_page
    page.goto(f"{fleet.dash.url}/send?kind=broadcast")
    page.select_option("#broadcast-type", "echo")
    page.fill("#broadcast-params", '{"message": ')
    page.click("#send-broadcast-submit")
    expect(page.locator("#broadcast-params-error")).to_contain_text("JSON")
    expect(page.locator("#broadcast-type")).to_have_value("echo")
    message = f"to every device {os.urandom(3).hex()}"
    page.fill("#broadcast-params", f'{{"message": "{message}"}}')
    page.click("#send-broadcast-submit")
    page.wait_for_url(re.compile(r".*/broadcasts/[^/]+$"))
    runs = page.locator("#broadcast-runs a")
    expect(runs).to_have_count(1)
    run = fleet.controller.wait_task(runs.inner_text(), timeout=30)
    assert run["status"] == "succeeded" and run["result"]["message"] == message, run


def test_an_upload_without_the_forms_csrf_value_stores_nothing(fleet: Fleet) -> None:
    files_before = len(fleet.controller.api.get("/api/v1/files").json())
    client = fleet.dash.http("operate")
    try:
        refused = client.post("/send/upload", data={"account": "alice", "title": "t"},
                              files={"video": ("v.mp4", os.urandom(200_000), "video/mp4")})
        assert refused.status_code == 403 and "CSRF" in refused.text
        # With the value it gets as far as the form's own checks (no such account): shown, not stored.
        unknown = client.post("/send/upload", data={"csrf_token": client.cookies["fleet_csrf"], "account": "nobody",
                                                    "title": "t"},
                              files={"video": ("v.mp4", os.urandom(200_000), "video/mp4")})
        assert unknown.status_code == 422 and 'id="upload-account-error"' in unknown.text
    finally:
        client.close()
    assert len(fleet.controller.api.get("/api/v1/files").json()) == files_before
