"""The reference platform site on its own, in real headless Chromium: the DOM and HTTP contract
that `device/platforms/reference/locators.toml` and the reference adapter rely on (QR login with
and without the SMS step, logout, upload with progress, chat, the failure switch, the records).

The site runs as its own process (`python -m device.platforms.reference.site`), as `fleet up`
and the fleet-wide tests in test_browser.py use it; one browser serves the whole module and
each test gets a fresh browser context (no shared cookies) and a reset site.
"""

from __future__ import annotations

import hashlib
import os
import struct
import sys
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import segno
from playwright.sync_api import expect

from tests.harness import Process, wait_for
from tests.ports import free_port, port_open

pytestmark = pytest.mark.integration

TIMEOUT_MS = 10_000


@dataclass
class Site:
    url: str
    api: httpx.Client
    process: Process

    def records(self) -> dict[str, list[dict[str, Any]]]:
        return self.api.get("/_records").json()


def start_site(work: Path, name: str) -> Process:
    port = free_port()
    argv = [sys.executable, "-m", "device.platforms.reference.site", "--port", str(port), "--state-dir", str(work / "state")]
    process = Process(name, argv, work)
    process.start()
    wait_for(lambda: port_open(port) or not process.running, 20, what="the reference site to listen")
    assert process.running, process.log_tail()
    process.port = port  # type: ignore[attr-defined]
    return process


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    process = start_site(tmp_path_factory.mktemp("site"), "reference-site")
    try:
        url = f"http://127.0.0.1:{process.port}"  # type: ignore[attr-defined]
        with httpx.Client(base_url=url, timeout=10) as api:
            yield Site(url, api, process)
    finally:
        process.stop()


@pytest.fixture
def page(site: Site, browser: Any) -> Iterator[Any]:
    assert site.api.post("/_admin/reset").status_code == 200
    context = browser.new_context(base_url=site.url)
    context.set_default_timeout(TIMEOUT_MS)
    try:
        yield context.new_page()
    finally:
        context.close()


# ---- helpers ------------------------------------------------------------------------------------

def login_token(page: Any) -> str:
    page.goto("/login")
    expect(page.locator("#login-status")).to_have_text("waiting for scan")
    token = page.locator("#qr").get_attribute("data-token")
    assert token
    return token


def scan(site: Site, token: str, account: str) -> str:
    answer = site.api.post("/_phone/scan", json={"token": token, "account": account})
    assert answer.status_code == 200, answer.text
    return answer.json()["state"]


def log_in(site: Site, page: Any, account: str) -> None:
    assert scan(site, login_token(page), account) == "done"
    page.wait_for_url("**/home")
    expect(page.locator("#account-name")).to_have_text(account)


def png_pixels(data: bytes) -> list[list[bool]]:
    """Decode a non-interlaced PNG (grey, palette, RGB or RGBA) into rows of `dark` flags."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    offset, idat, palette = 8, b"", b""
    width = height = depth = colour = 0
    while offset < len(data):
        (length,), kind = struct.unpack(">I", data[offset:offset + 4]), data[offset + 4:offset + 8]
        body = data[offset + 8:offset + 8 + length]
        offset += 12 + length
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert interlace == 0
        elif kind == b"PLTE":
            palette = body
        elif kind == b"IDAT":
            idat += body
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[colour]
    bits = depth * channels
    stride, step = (width * bits + 7) // 8, max(1, bits // 8)
    raw, rows, previous = zlib.decompress(idat), [], bytearray(stride)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            left = line[i - step] if i >= step else 0
            up, corner = previous[i], previous[i - step] if i >= step else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                guess = left + up - corner
                near = min((abs(guess - left), 0, left), (abs(guess - up), 1, up), (abs(guess - corner), 2, corner))
                line[i] = (line[i] + near[2]) & 0xFF
        previous = line
        row = []
        for x in range(width):
            if depth < 8:
                value = (line[x * depth // 8] >> (8 - depth - (x * depth) % 8)) & ((1 << depth) - 1)
                samples = [value * 255 // ((1 << depth) - 1)] if colour == 0 else [value]
            else:
                samples = list(line[x * step:x * step + channels])
            if colour == 3:
                samples = list(palette[samples[0] * 3:samples[0] * 3 + 3])
            row.append(sum(samples[:3] if colour in (2, 3, 6) else samples[:1]) / min(3, len(samples)) < 128)
        rows.append(row)
    return rows


def qr_modules(pixels: list[list[bool]]) -> list[list[bool]]:
    """The module grid of a QR symbol drawn in `pixels` (any scale, any quiet zone)."""
    dark = [(y, x) for y, row in enumerate(pixels) for x, value in enumerate(row) if value]
    top, left = min(y for y, _ in dark), min(x for _, x in dark)
    right = max(x for _, x in dark)
    run = 0
    while pixels[top][left + run]:  # the top edge of the top-left finder pattern: 7 modules
        run += 1
    scale = run / 7
    count = round((right - left + 1) / scale)
    return [[pixels[top + int((r + 0.5) * scale)][left + int((c + 0.5) * scale)] for c in range(count)]
            for r in range(count)]


def encodes(modules: list[list[bool]], text: str) -> bool:
    """Whether `modules` is a QR encoding of `text` (any error level, any mask)."""
    version = (len(modules) - 17) // 4
    for error in "LMQH":
        for mask in range(8):
            try:
                symbol = segno.make_qr(text, error=error, mask=mask, version=version, boost_error=False)
            except segno.DataOverflowError:
                continue
            if [[bool(v) for v in row] for row in symbol.matrix] == modules:
                return True
    return False


# ---- the tests ---------------------------------------------------------------------------------

def test_qr_login_lands_on_home_and_the_qr_code_encodes_the_scan_link(site: Site, page: Any) -> None:
    token = login_token(page)
    png = site.api.get("/login/qr.png", params={"token": token})
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert encodes(qr_modules(png_pixels(png.content)), f"{site.url}/_phone/scan?token={token}")
    assert site.api.get("/login/state", params={"token": token}).json() == {"state": "waiting", "account": None}

    assert scan(site, token, "alice") == "done"
    page.wait_for_url("**/home")
    expect(page.locator("#account-name")).to_have_text("alice")
    for link in ("/upload", "/messages"):
        assert page.locator(f"a[href='{link}']").count() == 1
    [cookie] = [c for c in page.context.cookies() if c["name"] == "session"]
    assert cookie["httpOnly"] and len(cookie["value"]) >= 16
    assert [(r["account"], r["method"]) for r in site.records()["logins"]] == [("alice", "qr")]

    # The phone's answers for what it cannot do are clear JSON, not a crash.
    unknown = site.api.post("/_phone/scan", json={"token": "no-such-token", "account": "alice"})
    assert unknown.status_code == 404 and "detail" in unknown.json()
    assert site.api.get("/_phone/sms", params={"account": "alice"}).status_code == 404


def test_the_phone_page_approves_the_account_named_in_the_scan_link(site: Site, page: Any) -> None:
    """The scan link a login task prints names the task's account: the phone page offers that
    account (not a fixed "demo"), and approving it logs that account in."""
    token = login_token(page)
    phone = page.context.new_page()
    phone.goto(f"/_phone/scan?token={token}&account=zoe%20k")
    expect(phone.locator("input[name=account]")).to_have_value("zoe k")
    phone.click("button")
    expect(phone.locator("h1")).to_have_text("Approved")
    page.wait_for_url("**/home")
    expect(page.locator("#account-name")).to_have_text("zoe k")
    assert [(r["account"], r["method"]) for r in site.records()["logins"]] == [("zoe k", "qr")]


def test_the_phone_page_without_an_account_asks_for_one(site: Site, page: Any) -> None:
    token = login_token(page)
    phone = page.context.new_page()
    phone.goto(f"/_phone/scan?token={token}")
    account = phone.locator("input[name=account]")
    expect(account).to_have_value("")
    assert account.get_attribute("required") is not None
    # A form posted without an account is refused with a reason, and nobody is logged in.
    refused = site.api.post("/_phone/approve", data={"token": token, "account": ""})
    assert refused.status_code == 400 and "account" in refused.text
    assert site.api.get("/login/state", params={"token": token}).json() == {"state": "waiting", "account": None}
    assert site.records()["logins"] == []


def test_qr_login_with_a_wrong_then_the_right_sms_code(site: Site, page: Any) -> None:
    assert site.api.post("/_admin/config", json={"sms_required": ["bob"], "fail": {}}).status_code == 200
    token = login_token(page)
    assert scan(site, token, "bob") == "needs_code"
    expect(page.locator("#sms-form")).to_be_visible()
    assert site.api.get("/login/state", params={"token": token}).json() == {"state": "needs_code", "account": "bob"}
    code = site.api.get("/_phone/sms", params={"account": "bob"}).json()["code"]
    assert len(code) == 6 and code.isdigit()

    page.fill("#sms-code", "000000" if code != "000000" else "111111")
    page.click("#sms-submit")
    expect(page.locator("#login-status")).to_have_text("wrong code")
    expect(page.locator("#sms-form")).to_be_visible()
    assert "/login" in page.url

    page.fill("#sms-code", code)
    page.click("#sms-submit")
    page.wait_for_url("**/home")
    expect(page.locator("#account-name")).to_have_text("bob")
    assert [(r["account"], r["method"]) for r in site.records()["logins"]] == [("bob", "qr+sms")]
    # Neither the SMS code nor the session cookie ever reaches the site's log.
    [cookie] = [c["value"] for c in page.context.cookies() if c["name"] == "session"]
    log = site.process.log_path.read_text(errors="replace")
    assert code not in log and cookie not in log


def home_status(site: Site, cookie: str) -> int:
    with httpx.Client(base_url=site.url, cookies={"session": cookie}, timeout=10) as client:
        return client.get("/home").status_code


def test_logout_ends_the_session_on_the_server_too(site: Site, page: Any) -> None:
    for path in ("/home", "/upload", "/messages"):
        answer = site.api.get(path, follow_redirects=False)
        assert answer.status_code == 303 and answer.headers["location"] == "/login", path
    log_in(site, page, "carol")
    [cookie] = [c["value"] for c in page.context.cookies() if c["name"] == "session"]
    assert home_status(site, cookie) == 200

    page.click("#logout")
    page.wait_for_url("**/login")
    page.goto("/home")
    assert page.url.endswith("/login")
    # The old cookie, replayed, is refused: the server forgot the session.
    assert home_status(site, cookie) == 303


def test_upload_with_title_tags_cover_and_schedule_is_recorded_intact(site: Site, page: Any, tmp_path: Path) -> None:
    video, cover = tmp_path / "clip.mp4", tmp_path / "cover.png"
    video.write_bytes(os.urandom(4 * 1024 * 1024 + 123))
    segno.make("cover").save(str(cover), scale=8)
    log_in(site, page, "alice")
    page.goto("/upload")
    expect(page.locator("#publish")).to_be_disabled()
    page.set_input_files("#video-file", str(video))
    expect(page.locator("#publish")).to_be_enabled()
    assert page.locator("#upload-progress").evaluate("bar => bar.value") == 100
    page.fill("#title", "Sunset over the bay")
    page.fill("#tags", "travel, sea ,sunset")
    page.set_input_files("#cover-file", str(cover))
    page.fill("#publish-at", "2030-01-02T03:04")
    page.click("#publish")
    result = page.locator("#publish-result")
    expect(result).to_have_text("published")
    video_id = result.get_attribute("data-video-id")
    assert video_id

    [upload] = site.records()["uploads"]
    assert upload["account"] == "alice" and upload["title"] == "Sunset over the bay"
    assert upload["tags"] == ["travel", "sea", "sunset"]
    assert upload["publish_at"] == "2030-01-02T03:04:00+00:00"
    assert upload["video_sha256"] == hashlib.sha256(video.read_bytes()).hexdigest()
    assert upload["video_size"] == video.stat().st_size
    assert upload["cover_sha256"] == hashlib.sha256(cover.read_bytes()).hexdigest()
    assert upload["at"]


def test_chat_message_is_recorded(site: Site, page: Any) -> None:
    log_in(site, page, "alice")
    page.goto("/messages")
    page.fill("#to", "someone-new")
    page.fill("#message", "hello there\nsecond line")
    page.click("#send")
    expect(page.locator("#send-result")).to_have_text("sent")
    assert [(m["account"], m["to"], m["message"]) for m in site.records()["messages"]] == [
        ("alice", "someone-new", "hello there\nsecond line")
    ]


def test_an_empty_recipient_shows_a_readable_error(site: Site, page: Any) -> None:
    log_in(site, page, "alice")
    page.goto("/messages")
    page.fill("#message", "to nobody")
    page.click("#send")
    expect(page.locator("#error")).to_be_visible()
    assert "object" not in page.locator("#error").inner_text()
    assert site.records()["messages"] == []


def test_the_fail_switch_shows_the_servers_message_in_error(site: Site, page: Any, tmp_path: Path) -> None:
    assert site.api.post("/_admin/config", json={"fail": {"publish": 500, "send": 503}}).status_code == 200
    log_in(site, page, "alice")

    page.goto("/messages")
    page.fill("#to", "bob")
    page.fill("#message", "will fail")
    page.click("#send")
    expect(page.locator("#error")).to_contain_text("503")
    assert page.locator("#send-result").count() == 0

    video = tmp_path / "clip.mp4"
    video.write_bytes(os.urandom(64 * 1024))
    page.goto("/upload")
    page.set_input_files("#video-file", str(video))
    expect(page.locator("#publish")).to_be_enabled()
    page.fill("#title", "will fail")
    page.click("#publish")
    expect(page.locator("#error")).to_contain_text("500")
    assert page.locator("#publish-result").count() == 0
    assert site.records()["uploads"] == [] and site.records()["messages"] == []

    # An empty config clears the switch.
    assert site.api.post("/_admin/config", json={}).status_code == 200
    page.goto("/messages")
    page.fill("#to", "bob")
    page.fill("#message", "works again")
    page.click("#send")
    expect(page.locator("#send-result")).to_have_text("sent")


def test_records_survive_a_restart_and_the_site_listens_on_loopback(tmp_path: Path) -> None:
    process = start_site(tmp_path, "first")
    try:
        url = f"http://127.0.0.1:{process.port}"  # type: ignore[attr-defined]
        # Sessions are the site's own business; a message needs one, so log in through the API.
        with httpx.Client(base_url=url, timeout=10) as api:
            token = api.get("/login").text.split('data-token="')[1].split('"')[0]
            assert api.post("/_phone/scan", json={"token": token, "account": "dave"}).json()["state"] == "done"
            home = api.get("/login/finish", params={"token": token}, follow_redirects=True)
            assert home.status_code == 200 and home.url.path == "/home"
            assert api.post("/api/send", json={"to": "erin", "message": "kept"}).status_code == 200
    finally:
        process.stop()
    assert "127.0.0.1" in process.log_path.read_text()

    again = start_site(tmp_path, "second")
    try:
        records = httpx.get(f"http://127.0.0.1:{again.port}/_records", timeout=10).json()  # type: ignore[attr-defined]
    finally:
        again.stop()
    assert [(m["account"], m["to"], m["message"]) for m in records["messages"]] == [("dave", "erin", "kept")]
    assert [r["account"] for r in records["logins"]] == ["dave"]
