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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from schemas.status import DeviceFacts

P = TypeVar("P", bound=BaseModel)

ProgressReporter = Callable[[int | None, str | None], Awaitable[None]]


class TaskFailure(Exception):
    """Raised by a handler to fail its task with a machine-readable code and a message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class TaskContext:
    """What a running handler knows about its task and device."""

    task_id: str
    device_id: str
    account: str | None
    data_dir: Path
    facts: DeviceFacts
    _report: ProgressReporter = field(repr=False)

    async def progress(self, percent: int | None = None, message: str | None = None) -> None:
        """Report progress (percent 0–100, clamped) and/or a status message."""
        await self._report(percent, message)


class TaskHandler(ABC, Generic[P]):
    """One task type. Subclasses set `type` and `params_model` and implement `run`."""

    type: str
    params_model: builtins.type[P]  # `type` alone would mean the attribute above
    # True when running the task again after a crash mid-run has no harmful side effect.
    safe_to_retry: bool = False

    @abstractmethod
    async def run(self, ctx: TaskContext, params: P) -> dict[str, Any]:
        """Do the task; the returned dict is reported as the result."""
