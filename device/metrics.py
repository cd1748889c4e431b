"""Reads the load of the PC a device runs on (CPU, memory, free disk) for its heartbeats,
the same way on Linux, macOS and Windows (psutil and the standard library)."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import psutil

from schemas.status import DeviceMetrics

log = logging.getLogger(__name__)


class MetricsReader:
    """`read()` gives the CPU use since the previous call, so the first call primes the counter."""

    def __init__(self, data_dir: Path) -> None:
        self._data_dir = data_dir
        psutil.cpu_percent(interval=None)

    def read(self) -> DeviceMetrics | None:
        try:
            return DeviceMetrics(
                cpu_percent=psutil.cpu_percent(interval=None),
                memory_percent=psutil.virtual_memory().percent,
                disk_free_bytes=shutil.disk_usage(self._data_dir).free,
            )
        except (OSError, RuntimeError, ValueError) as exc:  # a sandboxed or unusual system: heartbeats go on without
            log.debug("device metrics unavailable: %s", exc)
            return None
