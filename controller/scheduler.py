"""Runs the task sweeper (`controller.services.sweeper`) in a background thread of the controller.

Re-sends wait while the ingest writer is behind: device messages already taken off the socket
but not yet recorded would otherwise look like silence, and re-sending would only add to them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from sqlalchemy.orm import Session, sessionmaker

from controller.services.publisher import Publisher
from controller.services.sweeper import sweep

log = logging.getLogger(__name__)

BACKLOG_HOLD = 1000  # queued device messages past which re-sends wait for the writer to catch up


class Scheduler:
    """Calls `sweep` every `interval` seconds until stopped; an error is logged, never fatal."""

    def __init__(
        self, sessions: sessionmaker[Session], publisher: Publisher, *, interval: float, timeout_grace: float,
        resend_after: float | None = None, backlog: Callable[[], int] = lambda: 0,
    ) -> None:
        self._sessions = sessions
        self._publisher = publisher
        self._interval = interval
        self._timeout_grace = timeout_grace
        self._resend_after = resend_after
        self._backlog = backlog
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="task-sweeper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                resend_after = self._resend_after if self._backlog() < BACKLOG_HOLD else None
                with self._sessions() as session:
                    sweep(session, self._publisher, timeout_grace=self._timeout_grace, resend_after=resend_after)
            except Exception:
                log.exception("task sweep failed; retrying in %.1f s", self._interval)
