"""Runs the task sweeper (`controller.services.sweeper`) and fires due schedules
(`controller.services.schedule_fire`) in a background thread of the controller.

Of several controllers on one database only the holder of the `sweeper` lease sweeps
(`controller.lease`, docs/architecture.md#several-controllers): it renews the lease every
pass, gives it up while it has no broker link (a controller that cannot publish must not be
the one that re-sends) and on a clean stop, and another controller takes it over once it
expired (`lease_seconds` after the holder died). The holder is named by client id and host,
so a controller restarted at once takes its own lease back without waiting for it to expire.

Re-sends wait while the ingest writer is behind: device messages already taken off the socket
but not yet recorded would otherwise look like silence, and re-sending would only add to them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime

from sqlalchemy.orm import Session, sessionmaker

from controller import lease
from controller.services import finished, schedule_fire, sweeper
from controller.services.publisher import Publisher
from controller.services.sweeper import sweep
from schemas.common import utcnow

log = logging.getLogger(__name__)

MIN_WAIT = 0.005  # seconds: the shortest wait between two passes when something is due
BACKLOG_HOLD = 1000  # queued device messages past which re-sends wait for the writer to catch up


class Scheduler:
    """Calls `sweep` every `interval` seconds while it holds the sweep lease, until stopped; an
    error is logged, never fatal."""

    def __init__(
        self, sessions: sessionmaker[Session], publisher: Publisher, *, interval: float, timeout_grace: float,
        resend_after: float | None = None, backlog: Callable[[], int] = lambda: 0, holder: str = "controller",
        lease_seconds: float = 5.0, connected: Callable[[], bool] = lambda: True, unacked_grace: float | None = None,
        schedule_missed_window: float = 3600.0,
    ) -> None:
        self._sessions = sessions
        self._publisher = publisher
        self._interval = interval
        self._timeout_grace = timeout_grace
        self._resend_after = resend_after
        self._unacked_grace = unacked_grace
        self._backlog = backlog
        self._missed_window = schedule_missed_window
        self._holder, self._lease_seconds, self._connected = holder, lease_seconds, connected
        self._held_until = 0.0  # time.monotonic() until which the lease is surely ours
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="task-sweeper", daemon=True)
        # Told the tasks a sweep ended (expired, timed out): the task metrics of /metrics.
        self.finished_hooks: list[finished.Hook] = []
        # Other work for the lease holder only, after each sweep, each in a session of its own
        # (the scheduled prune: docs/architecture.md#housekeeping); an error is logged, never fatal.
        self.lease_jobs: list[Callable[[Session, datetime], None]] = []

    @property
    def holds_lease(self) -> bool:
        return time.monotonic() < self._held_until

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        if self._held_until:
            self._give_up("stopping")

    def _loop(self) -> None:
        wait = self._interval
        while not self._stop.wait(wait):
            wait = self._interval
            try:
                if self._turn():
                    self._sweep()
                    wait = self._until_next_due()
            except Exception:
                log.exception("task sweep failed; retrying in %.1f s", self._interval)

    def _turn(self) -> bool:
        """Whether this controller sweeps now: it has a broker link and holds (or took) the lease."""
        if not self._connected():
            if self._held_until:
                self._give_up("no broker link")
            return False
        started = time.monotonic()
        with self._sessions() as session:
            won = lease.take(session, lease.SWEEPER, self._holder, self._lease_seconds)
        if won and not self.holds_lease:
            log.info("this controller (%s) runs the sweeps now", self._holder)
        self._held_until = started + self._lease_seconds if won else 0.0
        return won

    def _until_next_due(self) -> float:
        """Seconds until the next run_at or schedule slot when that comes before the next pass,
        so waiting tasks go out and schedules fire on time, not up to an interval late."""
        now = utcnow()
        with self._sessions() as session:
            due = [t for t in (sweeper.next_release(session, now), schedule_fire.next_slot(session)) if t is not None]
        if not due:
            return self._interval
        return min(self._interval, max(MIN_WAIT, (min(due) - now).total_seconds()))

    def _give_up(self, why: str) -> None:
        self._held_until = 0.0
        try:
            with self._sessions() as session:
                lease.release(session, lease.SWEEPER, self._holder)
            log.info("gave up the sweep lease (%s)", why)
        except Exception as exc:
            log.warning("could not give up the sweep lease (%s); it expires by itself: %s", why, exc)

    def _sweep(self) -> None:
        behind = self._backlog() >= BACKLOG_HOLD
        with self._sessions() as session:
            sweep(session, self._publisher, timeout_grace=self._timeout_grace,
                  resend_after=None if behind else self._resend_after,
                  unacked_grace=None if behind else self._unacked_grace)
            finished.tell(self.finished_hooks, session)
            schedule_fire.fire_due(session, self._publisher, missed_window=self._missed_window)
        for job in self.lease_jobs:
            try:
                with self._sessions() as session:
                    job(session, utcnow())
            except Exception:
                log.exception("%s failed; tried again after the next sweep", getattr(job, "__qualname__", job))
