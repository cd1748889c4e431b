"""A browser session for one task: Playwright started, a persistent context on the account's
profile launched, one page; all of it closed when the task ends, whether it succeeded, failed
or was cancelled. On failure the page's screenshot and URL are kept for the task's result."""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from schemas.errors import DeviceError

log = logging.getLogger(__name__)

# Flags for a quiet, predictable Chromium: no first-run UI, no background calls home
# (on a closed network they fail by the dozen), no GPU on headless servers.
CHROMIUM_ARGS = [
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-gpu",
    "--disable-dev-shm-usage",
]
SCREENSHOT_LIMIT = 150_000  # bytes of JPEG sent inside a result; larger ones stay on disk only


@dataclass(frozen=True)
class BrowserOptions:
    executable: Path | None
    headless: bool
    no_sandbox: bool = False  # needed when running as root (e.g. in CI containers)


class BrowserUnavailable(DeviceError, RuntimeError):
    """Playwright is not installed or the browser cannot start; the message says what to do."""


@asynccontextmanager
async def browser_page(options: BrowserOptions, profile: Path) -> AsyncIterator[Any]:
    """A page in a persistent context on `profile`; everything is closed on exit."""
    try:
        from playwright.async_api import Error as PlaywrightError
        from playwright.async_api import async_playwright
    except ImportError:
        raise BrowserUnavailable(
            "browser tasks need Playwright: pip install 'mqtt-fleet[browser]'"
        ) from None
    profile.mkdir(parents=True, exist_ok=True)
    args = CHROMIUM_ARGS + (["--no-sandbox"] if options.no_sandbox else [])
    async with async_playwright() as playwright:
        try:
            context = await playwright.chromium.launch_persistent_context(
                str(profile),
                executable_path=str(options.executable) if options.executable else None,
                headless=options.headless,
                args=args,
                viewport={"width": 1280, "height": 800},
            )
        except PlaywrightError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise BrowserUnavailable(
                f"the browser could not start ({first}); install Chromium or Chrome, or set FLEET_BROWSER_PATH"
                " (or run `playwright install chromium` where downloads are allowed)"
            ) from None
        try:
            page = context.pages[0] if context.pages else await context.new_page()
            yield page
        finally:
            # Shielded: a cancelled task must still close its browser.
            await asyncio.shield(context.close())


async def failure_artifacts(page: Any, directory: Path, name: str) -> dict[str, Any]:
    """A screenshot (kept on disk, and as JPEG in the result when small) and the page's URL."""
    details: dict[str, Any] = {"url": page.url}
    try:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{name}.png"
        await page.screenshot(path=str(path), full_page=False, timeout=5000)
        details["screenshot_file"] = str(path)
        jpeg = await page.screenshot(type="jpeg", quality=50, timeout=5000)
        if len(jpeg) <= SCREENSHOT_LIMIT:
            details["screenshot_jpeg"] = base64.b64encode(jpeg).decode()
    except Exception as exc:  # the page may be gone; the URL alone still helps
        details["screenshot_error"] = type(exc).__name__
    return details
