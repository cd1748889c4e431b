"""What the device tells about itself in its birth message (`schemas.status.DeviceFacts`)."""

from __future__ import annotations

import platform
import socket
from collections.abc import Iterable
from importlib.metadata import PackageNotFoundError, version

from config import FleetSettings
from device.platforms.registry import load_platforms
from schemas.status import DeviceFacts

DISTRIBUTION = "mqtt-fleet"


def package_version() -> str:
    """The installed version of the project, or `0+unknown` when it is not installed."""
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return "0+unknown"


def build_facts(settings: FleetSettings, task_types: Iterable[str]) -> DeviceFacts:
    """Facts of this PC and daemon for the given settings and supported task types."""
    hostname = socket.gethostname()[:255] or "unknown"
    return DeviceFacts(
        name=(settings.device_name or hostname)[:200],
        version=package_version()[:64],
        hostname=hostname,
        os=platform.platform()[:200],
        python=platform.python_version(),
        task_types=sorted(task_types),
        platforms=sorted(load_platforms()),
        accounts=list(settings.accounts),
        groups=list(settings.groups),
        max_concurrency=settings.max_concurrency,
        keepalive=settings.keepalive,
        heartbeat_interval=settings.heartbeat_interval,
    )
