"""The task handler interface: what a task type plug-in implements and what it is given.

A handler is a `TaskHandler` subclass registered in the `fleet.task_handlers` entry-point
group. It validates its params with `params_model`, runs as a coroutine (blocking work belongs
in `asyncio.to_thread`), reports progress through its `TaskContext`, returns a JSON-able
result dict, and raises `TaskFailure` for a clean failure. It must let `asyncio.CancelledError`
through: that is how cancellation, timeouts and shutdown stop it.
"""

from __future__ import annotations

import builtins
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from pydantic import BaseModel

from device.url_policy import UrlPolicy
from schemas.errors import DeviceError, FleetCodeError, WireErrorCode
from schemas.status import DeviceFacts

if TYPE_CHECKING:  # platforms import handlers; handlers only name the adapter type
    from device.platforms.base import PlatformAdapter

P = TypeVar("P", bound=BaseModel)

ProgressReporter = Callable[[int | None, str | None, dict[str, Any] | None], Awaitable[None]]
InputSource = Callable[[str, float], Awaitable[str]]


class TaskFailure(FleetCodeError, DeviceError):
    """Raised by a handler to fail its task with a machine-readable code and a message;
    `details` (e.g. a screenshot and the page URL) go into the failed event's result.

    Built-in handlers use a `WireErrorCode`; a plug-in may give a code of its own."""

    def __init__(self, code: WireErrorCode | str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(code, message)
        self.details = details


class TaskHandedOver(DeviceError):
    """Raised by a handler whose task a later daemon process finishes (an `update`: the new
    version, or the old one after a rollback, reports it); the executor then reports nothing."""


@dataclass(frozen=True)
class BrowserEnvironment:
    """How this device runs browsers: the executable and flags, per-platform base URLs and
    locator overrides, where failure screenshots go, and the platform adapters installed."""

    options: Any  # device.browser.session.BrowserOptions (kept loose so handlers need no Playwright)
    platform_urls: dict[str, str]
    locator_dir: Path | None
    artifacts_dir: Path
    platforms: Mapping[str, type[PlatformAdapter]]
    media_policy: UrlPolicy  # which upload media URLs may be fetched
    vault_key_file: Path | None = None  # FLEET_VAULT_KEY_FILE: the operator's session vault key


@dataclass(frozen=True)
class TaskContext:
    """What a running handler knows about its task and device."""

    task_id: str
    device_id: str
    account: str | None
    data_dir: Path
    facts: DeviceFacts
    _report: ProgressReporter = field(repr=False)
    _input: InputSource | None = field(default=None, repr=False)
    _browser: Callable[[], BrowserEnvironment | None] | None = field(default=None, repr=False)

    @property
    def browser(self) -> BrowserEnvironment | None:
        """How browser tasks run on this device, or None without browser support. Built on first
        use: a daemon that never runs a browser task never loads the browser stack."""
        return None if self._browser is None else self._browser()

    async def progress(
        self, percent: int | None = None, message: str | None = None, details: dict[str, Any] | None = None
    ) -> None:
        """Report progress (percent 0–100, clamped), a status message and/or structured details."""
        await self._report(percent, message, details)

    async def wait_input(self, name: str, timeout: float) -> str:
        """Wait for an operator to send `name` (e.g. a verification code) through the controller;
        raises TaskFailure(`input_timeout`) after `timeout` seconds. The value is never logged."""
        if self._input is None:
            raise TaskFailure(WireErrorCode.INPUT_UNAVAILABLE, "this task cannot receive input")
        return await self._input(name, timeout)


class TaskHandler(ABC, Generic[P]):
    """One task type. Subclasses set `type` and `params_model` and implement `run`."""

    type: str
    params_model: builtins.type[P]  # `type` alone would mean the attribute above
    # True when running the task again after a crash mid-run has no harmful side effect.
    safe_to_retry: bool = False

    @abstractmethod
    async def run(self, ctx: TaskContext, params: P) -> dict[str, Any]:
        """Do the task; the returned dict is reported as the result."""
