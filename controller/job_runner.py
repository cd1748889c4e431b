"""Runs the rollout pass of jobs (`controller.services.job_engine`) in a background thread.

Of several controllers on one database only the holder of the `jobs` lease runs passes
(`controller.lease`, as the sweeps do): it renews the lease every pass, gives it up while it has
no broker link (a controller that cannot publish must not be the one creating runs) and on a
clean stop. What a pass creates is told to the push stream after its commit (the runs are
inserted in bulk, not as ORM objects the session hooks would see); runs it cancels go through
the ORM cancel path, which the hooks do see.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

from sqlalchemy.orm import Session, sessionmaker

from controller import lease
from controller.live import LiveBus
from controller.live_feed import task_change
from controller.models import Task
from controller.services import finished
from controller.services.job_engine import run_pass
from controller.services.publisher import Publisher

log = logging.getLogger(__name__)

JOBS = "jobs"  # the lease's name


class JobRunner:
    """Calls `run_pass` every `interval` seconds while this controller holds the jobs lease."""

    def __init__(self, sessions: sessionmaker[Session], publisher: Publisher, *, interval: float, max_runs: int,
                 holder: str, lease_seconds: float, connected: Callable[[], bool] = lambda: True,
                 live: LiveBus | None = None) -> None:
        self._sessions, self._publisher = sessions, publisher
        self._interval, self._max_runs = interval, max_runs
        self._holder, self._lease_seconds, self._connected = holder, max(lease_seconds, 3 * interval), connected
        self._live = live
        self._held = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="job-rollout", daemon=True)
        self.finished_hooks: list[finished.Hook] = []  # told the runs a pass canceled (the task metrics)

    @property
    def holds_lease(self) -> bool:
        return self._held

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        if self._held:
            self._give_up("stopping")

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                if self._turn():
                    self._pass()
            except Exception:
                log.exception("job rollout pass failed; retrying in %.1f s", self._interval)

    def _turn(self) -> bool:
        if not self._connected():
            if self._held:
                self._give_up("no broker link")
            return False
        with self._sessions() as session:
            won = lease.take(session, JOBS, self._holder, self._lease_seconds)
        if won != self._held:
            log.info("this controller (%s) %s the job rollouts", self._holder, "runs" if won else "no longer runs")
        self._held = won
        return won

    def _give_up(self, why: str) -> None:
        self._held = False
        try:
            with self._sessions() as session:
                lease.release(session, JOBS, self._holder)
        except Exception as exc:
            log.warning("could not give up the jobs lease (%s); it expires by itself: %s", why, exc)

    def _tell(self, runs: Sequence[Task]) -> None:
        if self._live is not None:
            self._live.publish([task_change(run) for run in runs])

    def _pass(self) -> None:
        with self._sessions() as session:
            now = lease.database_now(session)
            session.rollback()
            run_pass(session, self._publisher, now, pass_interval=self._interval, max_runs=self._max_runs, tell=self._tell)
            finished.tell(self.finished_hooks, session)
