"""What the real-browser integration tests share: the reference site as a process, a device
daemon driving /usr/bin/chromium against it, and the QR login as an account's owner does it
(scan link from REST, approval on the site's "phone" pages, the SMS code through REST)."""

from __future__ import annotations

import html
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from tests.harness import Broker, Controller, Device, Process, missing_service, wait_for
from tests.ports import free_port, port_open

CHROMIUM = Path("/usr/bin/chromium")


@dataclass
class Site:
    url: str
    api: httpx.Client

    def records(self) -> dict[str, list[dict[str, Any]]]:
        return self.api.get("/_records").json()


def start_site(tmp_path: Path, processes: list[Process]) -> Site:
    """The reference site as a process with its own state dir; close `api` when done."""
    port = free_port()
    argv = [sys.executable, "-m", "device.platforms.reference.site", "--port", str(port), "--state-dir", str(tmp_path / "site")]
    process = Process("reference-site", argv, tmp_path)
    processes.append(process)
    process.start()
    wait_for(lambda: port_open(port) or not process.running, 20, what="reference site")
    assert process.running, process.log_tail()
    return Site(f"http://127.0.0.1:{port}", httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10))


def start_browser_device(broker: Broker, tmp_path: Path, processes: list[Process], site: Site, device_id: str,
                         **settings: Any) -> Device:
    if not CHROMIUM.exists():
        missing_service("chromium is not installed (Debian: apt-get install chromium)")
    device = Device(device_id, broker, tmp_path, platform_urls={"reference": site.url}, browser_path=str(CHROMIUM),
                    keepalive="5", **settings)
    processes.append(device.process)
    device.start()
    return device


def waiting_for(controller: Controller, task_id: str, what: str, **extra: Any) -> dict[str, Any]:
    """The task's details once it waits for `what` (and shows the `extra` fields)."""
    return wait_for(
        lambda: (t := controller.task(task_id)) and (d := t.get("details") or {}).get("waiting_for") == what
        and all(d.get(k) == v for k, v in extra.items()) and d,
        60, 0.1, f"task {task_id} waiting for {what}",
    )


def qr_login(controller: Controller, site: Site, account: str, code_step: bool = False) -> dict[str, Any]:
    """Log `account` in the way its owner would: scan the QR code shown in REST, and when the
    site asks, read the SMS and pass the code on through REST."""
    task = controller.create_task(None, "login", account=account, params={"platform": "reference", "wait": 60})
    details = waiting_for(controller, task["id"], "scan")
    assert details["qr_png"] and len(details["qr_png"]) > 200  # a real picture of the QR code
    # The owner opens the scan link the task shows: its approval page offers the task's account.
    phone = site.api.get(details["scan_url"])
    assert phone.status_code == 200
    assert re.findall(r'name="account" value="([^"]*)"', phone.text) == [html.escape(account)]
    token = parse_qs(urlsplit(details["scan_url"]).query)["token"][0]
    assert site.api.post("/_phone/approve", data={"token": token, "account": account}).status_code == 200
    if code_step:
        waiting_for(controller, task["id"], "code")
        code = site.api.get("/_phone/sms", params={"account": account}).json()["code"]
        wrong = "000000" if code != "000000" else "111111"
        assert controller.api.post(f"/api/v1/tasks/{task['id']}/input", json={"name": "code", "value": wrong}).status_code == 202
        waiting_for(controller, task["id"], "code", wrong_code=True)
        assert controller.api.post(f"/api/v1/tasks/{task['id']}/input", json={"name": "code", "value": code}).status_code == 202
    done = controller.wait_task(task["id"], timeout=60)
    assert done["status"] == "succeeded", done
    return done
