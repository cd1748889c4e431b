"""Finding a Chromium-family browser on Linux, macOS and Windows without shelling out.

Order: the configured path (`FLEET_BROWSER_PATH`), then the system's Chromium or Chrome, then
None, which makes Playwright use its own build (installed with `playwright install chromium`
where downloads are possible).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from schemas.errors import DeviceError

_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome", "msedge")


def _platform_candidates() -> list[Path]:
    if sys.platform == "darwin":
        apps = ("Google Chrome.app/Contents/MacOS/Google Chrome", "Chromium.app/Contents/MacOS/Chromium")
        return [Path(root) / app for root in ("/Applications", str(Path.home() / "Applications")) for app in apps]
    if os.name == "nt":
        roots = [os.environ.get(name) for name in ("PROGRAMFILES", "PROGRAMFILES(X86)", "LOCALAPPDATA")]
        tails = (r"Google\Chrome\Application\chrome.exe", r"Chromium\Application\chrome.exe",
                 r"Microsoft\Edge\Application\msedge.exe")
        return [Path(root) / tail for root in roots if root for tail in tails]
    return [Path("/usr/bin/chromium"), Path("/usr/bin/chromium-browser"), Path("/snap/bin/chromium")]


class BrowserNotFound(DeviceError, RuntimeError):
    """The configured browser path does not exist."""


def find_browser(configured: Path | None = None) -> Path | None:
    """The browser executable to launch, or None to let Playwright use its own."""
    if configured is not None:
        if not Path(configured).is_file():
            raise BrowserNotFound(
                f"FLEET_BROWSER_PATH points to {configured}, which is not a file; "
                "set it to the Chromium or Chrome executable, or unset it to look for one"
            )
        return Path(configured)
    for name in _NAMES:
        found = shutil.which(name)
        if found:
            return Path(found)
    return next((path for path in _platform_candidates() if path.is_file()), None)
