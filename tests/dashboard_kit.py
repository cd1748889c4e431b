"""A real fleet and a real browser for the dashboard's Playwright tests.

`running_fleet` starts Mosquitto, a controller and device daemons (tests/harness.py) and kills
them afterwards; `DashboardFleet.sign_in` opens a headless Chromium page (Debian's
/usr/bin/chromium through Playwright) signed in through the /login form with a token of the
given scope; `screenshot` keeps a PNG in tests/artifacts/screenshots/ (gitignored). Without
Chromium or Mosquitto a test skips saying what to install, and fails in CI
(FLEET_REQUIRE_SERVICES=1, as `missing_service` does everywhere).

A module shares one fleet (`scope="module"` fixtures): each start costs seconds.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.harness import Broker, Controller, Device, Process

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = Path(__file__).parent / "artifacts" / "screenshots"
LOCALES = {"en": "en-US", "zh_CN": "zh-CN"}


@dataclass
class DashboardFleet:
    broker: Broker
    controller: Controller
    work: Path
    devices: dict[str, Device] = field(default_factory=dict)
    processes: list[Process] = field(default_factory=list)
    _tokens: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.controller.port}"

    def start_device(self, device_id: str, **settings: Any) -> Device:
        settings.setdefault("keepalive", "2")
        device = Device(device_id, self.broker, self.work, **settings)
        self.processes.append(device.process)
        device.start()
        self.devices[device_id] = device
        return device

    def token(self, scope: str) -> str:
        """An API token of `scope` ("read", "operate", "admin"), created once per fleet."""
        if scope not in self._tokens:
            answer = self.controller.api.post("/api/v1/tokens", json={"name": f"dashboard {scope}", "scope": scope})
            assert answer.status_code == 201, answer.text
            self._tokens[scope] = answer.json()["token"]
        return self._tokens[scope]

    def sign_in(self, browser: Any, scope: str = "operate", locale: str = "en") -> Any:
        """A new browser page (its own context: own cookies) signed in with a `scope` token,
        whose browser language is `locale` ("en" or "zh_CN"); close it with `page.context.close()`."""
        context = browser.new_context(locale=LOCALES[locale], viewport={"width": 1280, "height": 800})
        page = context.new_page()
        page.goto(f"{self.url}/login")
        page.fill("input[name=token]", self.token(scope))
        page.click("form[action='/login'] button[type=submit]")
        page.wait_for_url(re.compile(r".*/$"))
        return page

    def http(self, scope: str = "operate") -> httpx.Client:
        """A plain HTTP client signed in to the dashboard (its cookies), for POSTs a page would make."""
        client = httpx.Client(base_url=self.url, timeout=10, follow_redirects=False)
        client.get("/login")
        answer = client.post("/login", data={"token": self.token(scope), "csrf_token": client.cookies["fleet_csrf"]})
        assert answer.status_code == 303, answer.text
        return client


@contextlib.contextmanager
def running_fleet(
    work: Path, device_ids: tuple[str, ...] = ("pc-01",), broker_kind: str = "mosquitto", **controller_settings: Any
) -> Iterator[DashboardFleet]:
    """Broker, controller (with `controller_settings` as FLEET_* values) and devices, all online
    when this yields; killed on exit."""
    processes: list[Process] = []
    try:
        broker = Broker(broker_kind, work)
        processes.append(broker.process)
        broker.start()
        controller = Controller(broker, work, keepalive="5", **controller_settings)
        processes.append(controller.process)
        controller.start()
        fleet = DashboardFleet(broker, controller, work, processes=processes)
        for device_id in device_ids:
            fleet.start_device(device_id)
        for device_id in device_ids:
            controller.wait_device(device_id, "online", timeout=30)
        yield fleet
    finally:
        for process in reversed(processes):
            process.kill()


def screenshot(page: Any, name: str) -> Path:
    """Keep a full-page PNG of `page` as tests/artifacts/screenshots/<name>.png."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000, f"{path} is too small to show a page"
    return path
