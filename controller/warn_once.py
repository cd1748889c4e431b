"""Warn once per misbehaving device: the first bad message from a device is logged, the
thousandth is not. Each controller owns one `WarnOnce` (its sessions carry it in
`Session.info`), so two controllers in one process, or two tests, never share what was said."""

from __future__ import annotations

import logging
import threading

from sqlalchemy.orm import Session

log = logging.getLogger("controller.services.devices")

SESSION_KEY = "warn_once"


class WarnOnce:
    """Logs a warning the first time a (kind, device) pair is seen, then stays quiet."""

    def __init__(self) -> None:
        self._seen: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def __call__(self, kind: str, device_id: str, message: str, *args: object) -> None:
        with self._lock:
            if (kind, device_id) in self._seen:
                return
            self._seen.add((kind, device_id))
        log.warning(message, *args)


def warn_once(session: Session, kind: str, device_id: str, message: str, *args: object) -> None:
    """Warn through the session's controller; a session made elsewhere warns every time."""
    warner = session.info.get(SESSION_KEY)
    if isinstance(warner, WarnOnce):
        warner(kind, device_id, message, *args)
    else:
        log.warning(message, *args)
