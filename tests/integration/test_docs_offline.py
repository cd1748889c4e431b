"""The API's documentation pages work on a machine without internet: a real controller process
serves /docs (Swagger UI) and /redoc (ReDoc) with their scripts and styles from its own
packages, and headless Chromium renders them while every request to anything but loopback is
blocked and recorded. No API token is needed to read them; the API itself still needs one.

One broker kind is enough: the broker plays no part in the docs pages.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import expect

from tests.harness import Controller

LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}
TIMEOUT_MS = 15_000
TITLE = "MQTT fleet controller"

pytestmark = [pytest.mark.integration, pytest.mark.parametrize("broker", ["amqtt"], indirect=True)]


@dataclass
class Traffic:
    """What the page asked for: requests that tried to leave the machine (aborted), local
    answers that were errors, loads the page's Content-Security-Policy refused before any
    request was made, and script errors."""

    blocked: list[str] = field(default_factory=list)
    local: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    script_errors: list[str] = field(default_factory=list)

    def response(self, response: Any) -> None:
        if response.status >= 400:
            self.errors.append(f"{response.status} {response.url}")

    def console(self, message: Any) -> None:
        if "Content Security Policy" in message.text:
            self.refused.append(message.text)


@pytest.fixture
def offline_page(browser: Any, controller: Controller) -> Iterator[tuple[Any, Traffic]]:
    """A page in a fresh context with no API token, whose requests reach loopback only."""
    traffic = Traffic()
    context = browser.new_context(base_url=f"http://127.0.0.1:{controller.port}")
    context.set_default_timeout(TIMEOUT_MS)

    def only_loopback(route: Any) -> None:
        url = route.request.url
        if urlsplit(url).hostname in LOOPBACK:
            traffic.local.append(url)
            route.continue_()
        else:
            traffic.blocked.append(url)
            route.abort("internetdisconnected")

    context.route("**/*", only_loopback)
    page = context.new_page()
    page.on("response", traffic.response)
    page.on("console", traffic.console)
    page.on("pageerror", lambda error: traffic.script_errors.append(str(error)))
    try:
        yield page, traffic
    finally:
        context.close()


def test_docs_pages_need_no_token_but_the_api_does(controller: Controller) -> None:
    with httpx.Client(base_url=f"http://127.0.0.1:{controller.port}", timeout=10) as anonymous:
        for path in ("/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect",
                     "/docs-assets/swagger-ui/swagger-ui-bundle.js", "/docs-assets/swagger-ui/swagger-ui.css",
                     "/docs-assets/redoc/redoc.standalone.js"):
            assert anonymous.get(path).status_code == 200, path
        for page in ("/docs", "/redoc"):
            assert "cdn.jsdelivr.net" not in anonymous.get(page).text and "fonts.googleapis" not in anonymous.get(page).text
        assert anonymous.get("/api/v1/tasks").status_code == 401
        assert anonymous.get("/docs-assets/swagger-ui/no-such-file.js").status_code == 404


def test_swagger_ui_renders_with_the_network_blocked(offline_page: tuple[Any, Traffic], tmp_path: Path) -> None:
    page, traffic = offline_page
    page.goto("/docs")
    expect(page).to_have_title(f"{TITLE} - Swagger UI", timeout=TIMEOUT_MS)
    expect(page.locator(".info .title")).to_contain_text(TITLE, timeout=TIMEOUT_MS)
    expect(page.locator(".opblock-summary-path", has_text="/api/v1/tasks").first).to_be_visible(timeout=TIMEOUT_MS)
    expect(page.locator(".btn.authorize")).to_be_visible(timeout=TIMEOUT_MS)  # the bearer token can be entered
    page.wait_for_load_state("networkidle")
    page.screenshot(path=str(tmp_path / "docs.png"), full_page=False)

    assert traffic.blocked == [], f"requests tried to leave the machine: {traffic.blocked}"
    assert traffic.errors == [] and traffic.refused == [] and traffic.script_errors == [], traffic
    assert any(u.endswith("/docs-assets/swagger-ui/swagger-ui-bundle.js") for u in traffic.local), traffic.local
    assert any(u.endswith("/openapi.json") for u in traffic.local), traffic.local


def test_redoc_renders_with_the_network_blocked(offline_page: tuple[Any, Traffic], tmp_path: Path) -> None:
    page, traffic = offline_page
    page.goto("/redoc")
    expect(page).to_have_title(f"{TITLE} - ReDoc", timeout=TIMEOUT_MS)
    expect(page.locator("h1", has_text=TITLE).first).to_be_visible(timeout=TIMEOUT_MS)
    expect(page.get_by_text("/api/v1/tasks", exact=False).first).to_be_attached(timeout=TIMEOUT_MS)
    page.wait_for_load_state("networkidle")
    page.screenshot(path=str(tmp_path / "redoc.png"), full_page=False)

    assert traffic.blocked == [], f"requests tried to leave the machine: {traffic.blocked}"
    assert traffic.errors == [] and traffic.script_errors == [], traffic
    # ReDoc's sidebar hard-codes its maker's logo from cdn.redoc.ly; the page's policy refuses
    # it before a request is made (its alt text is hidden then). Nothing else may be refused.
    assert all("cdn.redoc.ly/redoc/logo-mini.svg" in text for text in traffic.refused), traffic.refused
    assert any(u.endswith("/docs-assets/redoc/redoc.standalone.js") for u in traffic.local), traffic.local
