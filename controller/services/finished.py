"""Tasks that reached a final status in a transaction, noted on its session so that whoever
commits it can tell others after the commit (the ingest writer feeds them to the task
duration histogram of `/metrics`). Noting costs an append; nothing is told for a transaction
that rolled back, since its session and notes are dropped with it."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

_KEY = "fleet_finished_tasks"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Finished:
    """One run of a task that ended: its type, final status and run time (None: never started)."""

    type: str
    status: str
    seconds: float | None


def note(session: Session, type_: str, status: str, started_at: datetime | None, finished_at: datetime) -> None:
    seconds = None if started_at is None else max(0.0, (finished_at - started_at).total_seconds())
    session.info.setdefault(_KEY, []).append(Finished(type_, status, seconds))


def take(session: Session) -> list[Finished]:
    """The notes of `session` so far (forgotten by it); call after its commit."""
    found: list[Finished] = session.info.pop(_KEY, [])
    return found


Hook = Callable[[list[Finished]], None]


def tell(hooks: Sequence[Hook], session: Session) -> None:
    """Hand the tasks `session`'s committed transaction ended to `hooks`; a failing hook is
    logged, never raised (the transaction is already committed)."""
    ended = take(session)
    for hook in hooks if ended else ():
        try:
            hook(ended)
        except Exception:
            log.exception("a hook failed on %d finished task(s)", len(ended))
