"""The platform adapter interface: what a social platform plug-in implements.

An adapter drives one platform's web site in a page the daemon gives it (one browser profile
per account, opened and closed by the daemon). Its URLs and selectors live in one locator file
(TOML, beside the adapter), so a site change touches one place. Adapters are found through the
`fleet.platforms` entry-point group, so a user adds a platform without touching the project:

    [project.entry-points."fleet.platforms"]
    myplatform = "my_package.adapter:MyPlatform"

Adapters raise `TaskFailure` with a clear code (`not_logged_in`, `selector_missing`,
`site_error`, `login_timeout`, …); anything else is reported as a handler error with a
screenshot and the page URL.
"""

from __future__ import annotations

import tomllib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

from pydantic import Field, ValidationError

from device.handlers.base import TaskContext, TaskFailure
from schemas.common import StrictModel
from schemas.errors import DeviceError, WireErrorCode
from schemas.tasks import ChatParams, LoginParams, UploadParams
from schemas.validation import describe_validation_error


class LocatorError(DeviceError, ValueError):
    """A locator file cannot be read or is not a valid locator file (reported `locator_invalid`)."""


class Locators(StrictModel):
    """A platform's locator file: its base URL, page paths and CSS selectors by name."""

    base_url: str = Field(min_length=1)
    pages: dict[str, str] = Field(default_factory=dict, description="page name → path or absolute URL")
    selectors: dict[str, str] = Field(default_factory=dict, description="element name → selector")
    texts: dict[str, str] = Field(default_factory=dict, description="texts the adapter looks for")

    @classmethod
    def load(cls, path: Path) -> "Locators":
        try:
            return cls.model_validate(tomllib.loads(path.read_text(encoding="utf-8")))
        except ValidationError as exc:
            raise LocatorError(f"locator file {path} is unusable: {describe_validation_error(exc)}") from None
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise LocatorError(f"locator file {path} is unusable: {exc}") from None

    def url(self, page: str) -> str:
        path = self.pages.get(page)
        if path is None:
            raise TaskFailure(WireErrorCode.LOCATOR_MISSING, f"the locator file names no page {page!r}")
        return path if "://" in path else self.base_url.rstrip("/") + "/" + path.lstrip("/")

    def css(self, name: str) -> str:
        selector = self.selectors.get(name)
        if selector is None:
            raise TaskFailure(WireErrorCode.LOCATOR_MISSING, f"the locator file names no selector {name!r}")
        return selector


@dataclass(frozen=True)
class MediaFiles:
    """Local copies of an upload's files, downloaded and verified before the browser starts."""

    video: Path
    cover: Path | None = None


class PlatformAdapter(ABC):
    """One platform. Subclasses set `name` and `locator_file` and implement the four methods."""

    name: ClassVar[str]
    locator_file: ClassVar[Path]
    # Whether an interrupted upload/chat can be run again without posting twice: never, unless
    # the platform itself deduplicates.
    safe_to_retry: ClassVar[bool] = False

    def __init__(self, base_url: str | None = None, locator_file: Path | None = None) -> None:
        """`base_url` replaces the locator file's (e.g. a test server); `locator_file` replaces
        the shipped one (FLEET_LOCATOR_DIR)."""
        self.locator_path = locator_file or self.locator_file
        locators = Locators.load(self.locator_path)
        self.locators = locators.model_copy(update={"base_url": base_url}) if base_url else locators

    async def element(self, page: Any, name: str, *, timeout: float = 15.0, state: str = "visible") -> Any:
        """The element the locator file calls `name`, once it is there; a clear failure if not."""
        from playwright.async_api import TimeoutError as PlaywrightTimeout

        selector = self.locators.css(name)
        try:
            return await page.wait_for_selector(selector, state=state, timeout=timeout * 1000)
        except PlaywrightTimeout:
            raise TaskFailure(
                WireErrorCode.SELECTOR_MISSING,
                f"{self.name}: element {name!r} ({selector}) did not appear on {page.url} within {timeout:g} s; "
                f"if the site changed, fix the selector in {self.locator_path}",
            ) from None

    async def first_of(self, page: Any, names: list[str], *, timeout: float = 15.0) -> str:
        """Wait until one of the named elements is visible; the name of the first one found."""
        combined = ", ".join(self.locators.css(name) for name in names)
        try:
            await page.wait_for_selector(combined, state="visible", timeout=timeout * 1000)
        except Exception:
            raise TaskFailure(
                WireErrorCode.SELECTOR_MISSING,
                f"{self.name}: none of {', '.join(names)} appeared on {page.url} within {timeout:g} s; "
                f"if the site changed, fix the selectors in {self.locator_path}",
            ) from None
        for name in names:
            if await self.visible(page, name):
                return name
        return names[-1]

    def at(self, page: Any, name: str) -> bool:
        """Whether the page shows the locator file's page `name` (compared by path)."""
        return urlsplit(page.url).path.rstrip("/") == urlsplit(self.locators.url(name)).path.rstrip("/")

    async def visible(self, page: Any, name: str) -> bool:
        """Whether the element called `name` is on the page right now."""
        return await page.locator(self.locators.css(name)).first.is_visible()

    async def open(self, page: Any, name: str) -> None:
        """Go to the page the locator file calls `name`."""
        response = await page.goto(self.locators.url(name), wait_until="domcontentloaded")
        if response is not None and response.status >= 500:
            raise TaskFailure(WireErrorCode.SITE_ERROR, f"{self.name}: {page.url} answered HTTP {response.status}")

    @abstractmethod
    async def check_login(self, page: Any, ctx: TaskContext) -> bool:
        """Whether the profile's cookies still log the account in."""

    @abstractmethod
    async def login(self, page: Any, ctx: TaskContext, params: LoginParams) -> dict[str, Any]:
        """Log in interactively: report the QR code (and later "waiting for code") as progress
        details, take the code from `ctx.wait_input("code")`, return what was learned."""

    @abstractmethod
    async def upload(self, page: Any, ctx: TaskContext, params: UploadParams, media: MediaFiles) -> dict[str, Any]:
        """Publish a video with its metadata; return the platform's id or URL of it."""

    @abstractmethod
    async def chat(self, page: Any, ctx: TaskContext, params: ChatParams) -> dict[str, Any]:
        """Send a direct message."""
