"""Platform adapters by name: the `fleet.platforms` entry points. A broken plug-in is logged and
skipped, never fatal."""

from __future__ import annotations

import logging
from importlib.metadata import entry_points

from device.platforms.base import PlatformAdapter

ENTRY_POINT_GROUP = "fleet.platforms"

log = logging.getLogger(__name__)


def load_platforms(group: str = ENTRY_POINT_GROUP) -> dict[str, type[PlatformAdapter]]:
    platforms: dict[str, type[PlatformAdapter]] = {}
    for point in entry_points(group=group):
        try:
            adapter = point.load()
            if not (isinstance(adapter, type) and issubclass(adapter, PlatformAdapter)):
                raise TypeError(f"{point.value} is not a PlatformAdapter subclass")
            platforms[point.name] = adapter
        except Exception as exc:  # a plug-in may fail in any way; the daemon must still start
            log.error("platform plug-in %r (%s) skipped: %s: %s", point.name, point.value, type(exc).__name__, exc)
    return platforms
