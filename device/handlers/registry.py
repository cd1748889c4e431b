"""Which task types this device can run: handlers from the `fleet.task_handlers` entry points,
plus any registered in code. A broken plug-in is logged and skipped, never fatal."""

from __future__ import annotations

import logging
import re
from importlib.metadata import entry_points
from typing import Any

from pydantic import BaseModel

from device.handlers.base import TaskHandler
from schemas.common import TASK_TYPE_PATTERN
from schemas.tasks import CONTROL_TYPES

ENTRY_POINT_GROUP = "fleet.task_handlers"

log = logging.getLogger(__name__)

AnyHandler = TaskHandler[Any]


class HandlerRegistry:
    """Task type name → handler instance."""

    def __init__(self) -> None:
        self._handlers: dict[str, AnyHandler] = {}

    def register(self, handler: type[AnyHandler] | AnyHandler, *, replace: bool = False) -> AnyHandler:
        """Add a handler (class or instance). Raises TypeError/ValueError for an unusable one."""
        instance = handler() if isinstance(handler, type) else handler
        if not isinstance(instance, TaskHandler):
            raise TypeError(f"{handler!r} is not a TaskHandler")
        task_type = getattr(instance, "type", None)
        if not isinstance(task_type, str) or not re.fullmatch(TASK_TYPE_PATTERN, task_type):
            raise ValueError(f"{type(instance).__name__}.type must match {TASK_TYPE_PATTERN}, got {task_type!r}")
        if task_type in CONTROL_TYPES:
            raise ValueError(f"task type {task_type!r} is handled by the daemon itself")
        model = getattr(instance, "params_model", None)
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise TypeError(f"{type(instance).__name__}.params_model must be a pydantic model class")
        if task_type in self._handlers and not replace:
            raise ValueError(
                f"task type {task_type!r} is already handled by {type(self._handlers[task_type]).__name__}"
            )
        self._handlers[task_type] = instance
        return instance

    def load_entry_points(self, group: str = ENTRY_POINT_GROUP) -> None:
        """Register every handler of the entry-point group, skipping (and logging) broken ones."""
        for point in entry_points(group=group):
            try:
                self.register(point.load())
            except Exception as exc:  # a plug-in may fail in any way; the daemon must still start
                log.error(
                    "task handler plug-in %r (%s) skipped: %s: %s", point.name, point.value, type(exc).__name__, exc
                )

    def get(self, task_type: str) -> AnyHandler | None:
        return self._handlers.get(task_type)

    def types(self) -> list[str]:
        return sorted(self._handlers)


def load_registry() -> HandlerRegistry:
    """A registry with every installed plug-in handler."""
    registry = HandlerRegistry()
    registry.load_entry_points()
    return registry
