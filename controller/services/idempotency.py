"""Idempotent creates: a request that creates tasks, sent twice, creates them once
(docs/architecture.md#idempotent-task-creation).

Two ways, as in the IETF draft "The Idempotency-Key HTTP Header Field" and as Stripe does:

- an `Idempotency-Key` header: the key, the sha256 of the request's body and the answer it got
  are committed in the same transaction as the tasks it created (`IdempotencyKey`), so either
  both exist or neither does. The same key with the same body answers that stored answer again
  (`Idempotent-Replayed: true`); with another body a 422. Keys are kept for
  FLEET_IDEMPOTENCY_KEY_TTL seconds, then pruned;
- a task `id` the client chose: the sha256 of its request is kept on the task
  (`Task.request_sha256`); the same id with the same body answers that task, with another 409.

Both are race-safe across controllers on one database: the key's and the task's primary keys
are the arbiters. On PostgreSQL the loser of a race waits for the winner's commit, gets a
unique violation, rolls back and answers the winner's result; on SQLite writers take turns
(`BEGIN IMMEDIATE`), so the second one finds the first's rows before it writes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel
from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from controller.models import IdempotencyKey
from controller.services.errors import ConflictError, InvalidRequestError
from schemas.api import IDEMPOTENCY_KEY_HEADER
from schemas.common import utcnow

log = logging.getLogger(__name__)

PRUNE_EVERY = 300.0  # seconds between two prunes of expired keys by one controller


class IdempotencyKeyReusedError(InvalidRequestError):
    """The key was used before with another request body (422, as the IETF draft says)."""


class TaskIdTakenError(ConflictError):
    """A client-chosen task id is held by a task created by another request (409)."""


class RaceLostError(ConflictError):
    """A concurrent change made the request fail and left nothing to answer with (409)."""


@dataclass(frozen=True)
class Claim:
    """An `Idempotency-Key` sent to one endpoint, with its request's fingerprint."""

    endpoint: str
    key: str
    request_sha256: str


@dataclass(frozen=True)
class Answer:
    """What a create answers: the status, the JSON body and whether it replays an earlier one."""

    status_code: int
    body: Any
    replayed: bool = False


def fingerprint(kind: str, body: BaseModel) -> str:
    """The sha256 of a parsed request: key order, spacing and defaults left out or given do not
    change it, any value does."""
    text = json.dumps([kind, body.model_dump(mode="json")], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def claim(endpoint: str, header: str | None, body: BaseModel) -> Claim | None:
    """The claim of a request's `Idempotency-Key` header (None without one). The draft's quoted
    form (`"8e03…"`) and the bare one name the same key."""
    if header is None:
        return None
    key = header[1:-1] if len(header) >= 3 and header[0] == header[-1] == '"' else header
    return Claim(endpoint, key, fingerprint(endpoint, body))


def recorded(session: Session, claim: Claim, now: datetime) -> Answer | None:
    """The stored answer to `claim`'s key, or None when the key is new (or expired: then it is
    deleted, and the request counts as new)."""
    row = session.get(IdempotencyKey, (claim.endpoint, claim.key))
    if row is None:
        return None
    if row.expires_at <= now:  # a plain DELETE: a concurrent one may have taken it already
        session.expunge(row)
        session.execute(delete(IdempotencyKey).where(IdempotencyKey.endpoint == claim.endpoint,
                                                     IdempotencyKey.key == claim.key))
        return None
    if row.request_sha256 != claim.request_sha256:
        raise IdempotencyKeyReusedError(
            f"the {IDEMPOTENCY_KEY_HEADER} {claim.key!r} was already used at {row.created_at:%Y-%m-%d %H:%M:%S} UTC "
            f"for {claim.endpoint} with another request body; send the same body to get that answer again, or a "
            "new key for a new request"
        )
    return Answer(row.status_code, row.response, replayed=True)


Staged = tuple[Answer, Callable[[], None]]  # the answer of staged (flushed) rows, what to do once committed


def create_once(
    session: Session, claim: Claim | None, ttl: float, stage: Callable[[], Staged | Answer],
    on_conflict: Callable[[], Answer | None] = lambda: None,
) -> Answer:
    """Run a create once per key: a stored answer is replayed; else `stage` adds the rows (or
    answers at once, e.g. with an existing task), the key's row is added beside them and all is
    committed together, then the staged after-commit step (the MQTT publish) runs.

    When the commit (or a flush in `stage`) loses a race for a primary key, everything is rolled
    back and the winner's result answers: the key's stored answer, else `on_conflict`'s (the
    task that holds a client-chosen id)."""
    try:
        found = recorded(session, claim, utcnow()) if claim is not None else None
        if found is not None:
            session.rollback()
            return found
        staged = stage()
        if isinstance(staged, Answer):
            session.rollback()
            return staged
        answer, after_commit = staged
        if claim is not None:
            now = utcnow()
            session.add(IdempotencyKey(
                endpoint=claim.endpoint, key=claim.key, request_sha256=claim.request_sha256,
                status_code=answer.status_code, response=answer.body, created_at=now,
                expires_at=now + timedelta(seconds=ttl),
            ))
        session.commit()
    except IntegrityError:
        session.rollback()
        return _winner(session, claim, on_conflict)
    after_commit()
    return answer


def _winner(session: Session, claim: Claim | None, on_conflict: Callable[[], Answer | None]) -> Answer:
    found = recorded(session, claim, utcnow()) if claim is not None else None
    found = found or on_conflict()
    session.rollback()
    if found is None:
        raise RaceLostError("the request collided with a concurrent change and created nothing; send it again "
                            f"(with the same {IDEMPOTENCY_KEY_HEADER}, if it had one)")
    log.info("a concurrent identical request won; answering its result")
    return Answer(found.status_code, found.body, replayed=True)


def prune(session: Session, now: datetime) -> int:
    """Delete the expired keys; how many went."""
    result = session.execute(delete(IdempotencyKey).where(IdempotencyKey.expires_at <= now))
    session.commit()
    return int(getattr(result, "rowcount", 0) or 0)


class Pruner:
    """Prunes expired keys (and whatever else `jobs` name) at most every `every` seconds, from
    whichever create request comes when it is due; one prune at a time per controller."""

    def __init__(self, jobs: list[Callable[[Session, datetime], int]], every: float = PRUNE_EVERY) -> None:
        self.jobs, self.every = jobs, every
        self._next = 0.0
        self._lock = threading.Lock()

    def run_if_due(self, sessions: sessionmaker[Session]) -> None:
        if time.monotonic() < self._next or not self._lock.acquire(blocking=False):
            return
        try:
            self._next = time.monotonic() + self.every
            for job in self.jobs:
                with sessions() as session:
                    removed = job(session, utcnow())
                if removed:
                    log.info("pruned %d expired rows (%s)", removed, getattr(job, "__qualname__", job))
        except Exception:  # housekeeping must never fail the request that happened to run it
            log.exception("pruning expired idempotency keys or file pieces failed; tried again later")
        finally:
            self._lock.release()
