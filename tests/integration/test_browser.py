"""Login, upload and chat in real headless Chromium, through the whole fleet:
REST → controller → broker → device → browser → the reference platform → result in REST.

One broker kind (the embedded amqtt) is enough here: the broker's part is covered elsewhere,
and every browser start costs seconds.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.browser_kit import Site, qr_login, start_browser_device, start_site, waiting_for
from tests.harness import Broker, Controller, Device, Process, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.parametrize("broker", ["amqtt"], indirect=True)]


@dataclass
class BrowserFleet:
    controller: Controller
    device: Device
    site: Site


@pytest.fixture
def site(tmp_path: Path, _processes: list[Process]) -> Iterator[Site]:
    site = start_site(tmp_path, _processes)
    with site.api:
        yield site


@pytest.fixture
def fleet(broker: Broker, controller: Controller, site: Site, tmp_path: Path, _processes: list[Process]) -> BrowserFleet:
    # The device knows its controller's address: upload media come only from its signed file links.
    device = start_browser_device(broker, tmp_path, _processes, site, "pc-web",
                                  public_api_url=f"http://127.0.0.1:{controller.port}")
    controller.wait_device("pc-web", "online")
    for account in ("alice", "bob"):
        response = controller.api.post("/api/v1/accounts", json={"name": account, "platform": "reference", "device_id": "pc-web"})
        assert response.status_code == 201, response.text
    return BrowserFleet(controller, device, site)


def login(fleet: BrowserFleet, account: str, code_step: bool = False) -> dict[str, Any]:
    return qr_login(fleet.controller, fleet.site, account, code_step)


def upload_to_controller(controller: Controller, body: bytes, name: str) -> dict[str, Any]:
    response = controller.api.post("/api/v1/files", params={"name": name}, content=body)
    assert response.status_code == 201, response.text
    return response.json()


def test_qr_login_code_step_and_cookie_check(fleet: BrowserFleet) -> None:
    controller, site = fleet.controller, fleet.site
    assert site.api.post("/_admin/config", json={"sms_required": ["bob"]}).status_code == 200

    alice = login(fleet, "alice")
    assert alice["device_id"] == "pc-web" and alice["result"]["account_name"] == "alice"
    bob = login(fleet, "bob", code_step=True)
    assert bob["result"]["method"] == "qr+code"
    assert [(r["account"], r["method"]) for r in site.records()["logins"]] == [("alice", "qr"), ("bob", "qr+sms")]
    account = controller.api.get("/api/v1/accounts/alice").json()
    assert account["login_status"] == "logged_in" and account["status_task_id"] == alice["id"]

    check = controller.create_task(None, "login", account="alice", params={"platform": "reference", "method": "cookie_check"})
    assert controller.wait_task(check["id"], timeout=60)["result"]["logged_in"] is True

    assert site.api.post("/_admin/reset").status_code == 200  # the site forgets every session: a logout
    again = controller.create_task(None, "login", account="alice", params={"platform": "reference", "method": "cookie_check"})
    assert controller.wait_task(again["id"], timeout=60)["result"]["logged_in"] is False
    assert controller.api.get("/api/v1/accounts/alice").json()["login_status"] == "expired"

    # Two accounts, two profiles: alice's logout left bob's own cookies alone on the site's side
    # only because the site reset both; on the device they never shared a directory.
    profiles = sorted(p.name for p in (fleet.device.data_dir / "profiles" / "reference").iterdir())
    assert len(profiles) == 2 and profiles[0].startswith("alice-") and profiles[1].startswith("bob-")


def test_upload_reaches_the_site_intact_and_chat_is_delivered(fleet: BrowserFleet) -> None:
    controller, site = fleet.controller, fleet.site
    login(fleet, "alice")
    video = os.urandom(3 * 1024 * 1024)
    cover = os.urandom(20_000)
    stored = upload_to_controller(controller, video, "clip.mp4")
    cover_file = upload_to_controller(controller, cover, "cover.png")
    publish_at = (datetime.now(timezone.utc) + timedelta(days=1)).replace(second=0, microsecond=0)
    params = {
        "platform": "reference", "video_url": stored["url"], "size": stored["size"], "sha256": stored["sha256"],
        "title": "Launch day", "tags": ["fleet", "mqtt"], "cover_url": cover_file["url"], "publish_at": publish_at.isoformat(),
    }
    task = controller.wait_task(controller.create_task(None, "upload", account="alice", params=params)["id"], timeout=90)
    assert task["status"] == "succeeded", task
    assert task["result"]["video_id"]
    progress = [e["progress"] for e in task["events"] if e["event"] == "progress" and e["progress"] is not None]
    assert progress == sorted(progress) and progress[-1] >= 90
    [upload] = site.records()["uploads"]
    assert (upload["account"], upload["title"], upload["tags"]) == ("alice", "Launch day", ["fleet", "mqtt"])
    assert (upload["video_sha256"], upload["video_size"]) == (hashlib.sha256(video).hexdigest(), len(video))
    assert upload["cover_sha256"] == hashlib.sha256(cover).hexdigest()
    assert datetime.fromisoformat(upload["publish_at"]).replace(tzinfo=timezone.utc) == publish_at
    assert not any((fleet.device.data_dir / "cache").iterdir())  # the cache was cleaned up

    chat = controller.wait_task(controller.create_task(None, "chat", account="alice", params={
        "platform": "reference", "to": "carol", "message": "hello from the fleet"})["id"], timeout=60)
    assert chat["status"] == "succeeded", chat
    assert [(m["account"], m["to"], m["message"]) for m in site.records()["messages"]] == [
        ("alice", "carol", "hello from the fleet")
    ]


def browser_processes(profile_root: Path) -> list[int]:
    """Chromium processes still running on one of the device's profiles (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if f"--user-data-dir={profile_root}" in cmdline:
                found.append(int(entry.name))
    return found


def assert_failed_with_screenshot(task: dict[str, Any], code: str) -> None:
    assert task["status"] == "failed" and task["error"]["code"] == code, task
    assert task["result"]["url"].startswith("http://127.0.0.1") and len(task["result"]["screenshot_jpeg"]) > 1000


def test_site_error_wrong_selector_and_cancel_are_clear_and_close_the_browser(
    fleet: BrowserFleet, broker: Broker, tmp_path: Path, _processes: list[Process]
) -> None:
    controller, site = fleet.controller, fleet.site
    login(fleet, "alice")
    profiles = fleet.device.data_dir / "profiles"

    site.api.post("/_admin/config", json={"fail": {"send": 500}})
    chat = controller.wait_task(controller.create_task(None, "chat", account="alice", params={
        "platform": "reference", "to": "carol", "message": "hi"})["id"], timeout=60)
    assert_failed_with_screenshot(chat, "site_error")
    assert "showed an error" in chat["error"]["message"]
    site.api.post("/_admin/config", json={"fail": {}})

    pending = controller.create_task(None, "login", account="bob", params={"platform": "reference", "wait": 60})
    waiting_for(controller, pending["id"], "scan")
    assert controller.api.post(f"/api/v1/tasks/{pending['id']}/cancel").status_code == 202
    canceled = controller.wait_task(pending["id"], timeout=30)
    assert canceled["status"] == "canceled"
    last_words = [e for e in canceled["events"] if (e.get("details") or {}).get("canceled_at")]
    assert last_words and last_words[-1]["details"]["canceled_at"]["url"].endswith("/login")
    wait_for(lambda: not browser_processes(profiles), 15, what="the browser closed after the cancel")

    # A locator file that no longer matches the site (FLEET_LOCATOR_DIR), on a second device.
    shipped = (Path(__file__).parents[2] / "device/platforms/reference/locators.toml").read_text()
    overrides = tmp_path / "locators"
    overrides.mkdir()
    (overrides / "reference.toml").write_text(shipped.replace('chat_send = "#send"', 'chat_send = "#send-it-now"'))
    start_browser_device(broker, tmp_path, _processes, site, "pc-web-2", locator_dir=str(overrides))
    controller.wait_device("pc-web-2", "online")
    controller.api.post("/api/v1/accounts", json={"name": "dave", "platform": "reference", "device_id": "pc-web-2"})
    login(fleet, "dave")
    broken = controller.wait_task(controller.create_task(None, "chat", account="dave", params={
        "platform": "reference", "to": "carol", "message": "hi"})["id"], timeout=90)
    assert_failed_with_screenshot(broken, "selector_missing")
    assert "chat_send" in broken["error"]["message"] and "reference.toml" in broken["error"]["message"]

    # Every browser is closed and both daemons still serve.
    wait_for(lambda: not browser_processes(tmp_path), 15, what="every browser closed")
    for device_id in ("pc-web", "pc-web-2"):
        assert controller.wait_task(controller.create_task(device_id, "ping")["id"])["status"] == "succeeded"
    assert site.records()["messages"] == []


@pytest.mark.parametrize("level", ["INFO", "DEBUG"])
def test_qr_login_token_stays_out_of_the_logs(
    level: str, broker: Broker, site: Site, tmp_path: Path, _processes: list[Process]
) -> None:
    """The one-time QR token is a login credential while it lives: REST shows it to the operator
    (in `scan_url`), but no fleet process writes it to its log, even at DEBUG."""
    controller = Controller(broker, tmp_path, keepalive="5", log_level=level)
    _processes.append(controller.process)
    controller.start()
    start_browser_device(broker, tmp_path, _processes, site, "pc-web", log_level=level)
    controller.wait_device("pc-web", "online")
    made = controller.api.post("/api/v1/accounts", json={"name": "alice", "platform": "reference", "device_id": "pc-web"})
    assert made.status_code == 201, made.text
    task = controller.create_task(None, "login", account="alice", params={"platform": "reference", "wait": 60})
    details = waiting_for(controller, task["id"], "scan")
    token = parse_qs(urlsplit(details["scan_url"]).query)["token"][0]
    assert len(token) >= 16
    assert site.api.post("/_phone/approve", data={"token": token, "account": "alice"}).status_code == 200
    assert controller.wait_task(task["id"], timeout=60)["status"] == "succeeded"
    logs = {path.name: path.read_text(errors="replace") for path in tmp_path.glob("*.log")}
    fleet_logs = {name: text for name, text in logs.items() if name in ("controller.log", "device-pc-web.log")}
    assert len(fleet_logs) == 2 and all(fleet_logs.values()), sorted(logs)
    leaked = sorted(name for name, text in fleet_logs.items() if token in text)
    print(f"{level}: QR token ({len(token)} chars) searched in {sorted(fleet_logs)} "
          f"({sum(map(len, fleet_logs.values()))} chars): found in {leaked or 'none'}")
    assert not leaked


@pytest.fixture
def bait_server() -> Iterator[tuple[str, list[str]]]:
    """A real local HTTP server standing for an internal service an upload task points at; it
    records each request path and redirects /go to itself."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            seen.append(self.path)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"internal secret")

        def log_message(self, *_args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()
    thread.join(10)


def test_upload_fetches_only_the_controllers_signed_links(
    fleet: BrowserFleet, bait_server: tuple[str, list[str]]
) -> None:
    controller = fleet.controller
    bait, seen = bait_server
    base = {"platform": "reference", "title": "t"}
    no_account = controller.create_task("pc-web", "upload", params={**base, "video_url": f"{bait}/a.mp4"})
    failed = controller.wait_task(no_account["id"], timeout=30)
    assert failed["status"] == "failed" and failed["error"]["code"] == "account_required", failed
    for url in (f"{bait}/b.mp4", f"http://127.0.0.1:{controller.port}/api/v1/files/x/download", "http://127.0.0.2:9/x.mp4"):
        task = controller.create_task(None, "upload", account="alice", params={**base, "video_url": url})
        failed = controller.wait_task(task["id"], timeout=30)
        assert failed["status"] == "failed" and failed["error"]["code"] == "url_not_allowed", failed
        assert "FLEET_UPLOAD_ALLOWED_HOSTS" in failed["error"]["message"]
    assert seen == []  # the device never sent a request to the internal service
    # The controller's own signed link is fetched (the controller checks the signature).
    stored = upload_to_controller(controller, b"clip", "clip.mp4")
    bad_signature = stored["url"].rsplit("signature=", 1)[0] + "signature=" + "0" * 64
    task = controller.create_task(None, "upload", account="alice", params={**base, "video_url": bad_signature})
    failed = controller.wait_task(task["id"], timeout=30)
    assert failed["error"]["code"] == "download_failed" and "403" in failed["error"]["message"], failed
