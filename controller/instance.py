"""Who this controller is among several on one database: its own MQTT client id, and how
steady its broker link is (docs/architecture.md#several-controllers).

Two controllers with one client id knock each other off the broker (the broker closes the
older connection of a client id on every new CONNECT) about once a second, each time taking
the persistent session with it. So each install generates its id once, on first start, and
keeps it in its data dir: a restart finds the same id and its broker session. An explicit
`FLEET_CONTROLLER_CLIENT_ID` still wins. `LinkWatch` counts disconnects in a recent window so
/healthz stops saying ok while the link keeps dropping, and names the probable cause.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
import threading
import time
from collections import deque
from pathlib import Path

from config.settings import FleetSettings
from schemas.errors import ConfigError

CLIENT_ID_FILE = "controller-client-id"
PREFIX = "fleet-controller"
HOST_CHARS = 20  # of the host name in a generated id (ids stay well under 64 characters)
FLAP_WINDOW = 60.0  # seconds over which disconnects are counted
FLAP_LIMIT = 3  # disconnects within FLAP_WINDOW that make the link unhealthy


class ClientIdError(ConfigError):
    """The generated client id cannot be kept in the data dir."""


def _host_part() -> str:
    host = re.sub(r"[^A-Za-z0-9-]+", "-", socket.gethostname().split(".")[0]).strip("-")
    return host[:HOST_CHARS] or "host"


def controller_client_id(settings: FleetSettings) -> str:
    """`FLEET_CONTROLLER_CLIENT_ID` when set, else this install's id from its data dir,
    generated (`fleet-controller-<host>-<8 hex>`) and kept there on first start."""
    if settings.controller_client_id:
        return settings.controller_client_id
    path = settings.data_dir / CLIENT_ID_FILE
    try:
        return _read_or_create(path)
    except OSError as exc:
        raise ClientIdError(
            f"cannot keep the controller's MQTT client id in {path}: {exc.strerror or exc}; make the data dir "
            "(FLEET_DATA_DIR) writable, or set FLEET_CONTROLLER_CLIENT_ID to an id of its own for each controller"
        ) from None


def _read_or_create(path: Path) -> str:
    for _ in range(50):
        try:
            text = path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            text = None
        if text:
            return text
        if text is None:
            path.parent.mkdir(parents=True, exist_ok=True)
            candidate = f"{PREFIX}-{_host_part()}-{secrets.token_hex(4)}"
            try:  # O_EXCL: two processes starting at once on one data dir agree on one id
                descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                continue
            with os.fdopen(descriptor, "w", encoding="utf-8") as file:
                file.write(candidate + "\n")
            return candidate
        time.sleep(0.01)  # created by another process that has not written it yet
    raise OSError(f"{path} stays empty")


class LinkWatch:
    """Disconnects of the broker link within the last `window` seconds (thread-safe)."""

    def __init__(self, window: float = FLAP_WINDOW, limit: int = FLAP_LIMIT) -> None:
        self._window, self._limit = window, limit
        self._lock = threading.Lock()
        self._drops: deque[float] = deque()
        self.total = 0  # disconnects since start (the /metrics counter)

    def dropped(self) -> None:
        with self._lock:
            self._drops.append(time.monotonic())
            self.total += 1
            self._trim()

    def recent(self) -> int:
        with self._lock:
            self._trim()
            return len(self._drops)

    def problem(self, client_id: str) -> str | None:
        """Why the link is unhealthy, or None while it is steady."""
        count = self.recent()
        if count < self._limit:
            return None
        return (f"the broker link dropped {count} times in {self._window:g} s: another client probably connects "
                f"with this controller's client id {client_id!r} (the broker closes the older connection of a "
                "client id); give each controller its own FLEET_CONTROLLER_CLIENT_ID, or unset it")

    def _trim(self) -> None:
        limit = time.monotonic() - self._window
        while self._drops and self._drops[0] < limit:
            self._drops.popleft()
