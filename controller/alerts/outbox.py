"""The alert outbox (`alert_deliveries`): claiming due deliveries, recording each attempt's
outcome with the next attempt's time (exponential backoff with jitter, kept in SQL so retries
outlive a restart), giving up after the rule's attempts, and listing for the REST API.

A claim pushes the row's `next_attempt_at` past the request's timeout before the request is
made and counts the attempt, in one committed UPDATE: no other pass or controller takes the
row meanwhile, and a controller that dies mid-request leaves it due again once the claim lapses.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from config.settings_alerts import AlertRule
from controller.alerts.detect import Found, record
from controller.models import AlertDelivery
from controller.services.errors import NotFoundError
from schemas.alerts import AlertEvent
from schemas.common import new_id

JITTER = 0.25  # each wait is its nominal value × a random factor in [1 − JITTER, 1 + JITTER]
CLAIM_MARGIN = 30.0  # seconds past the request timeout a claimed row stays out of others' reach
ERROR_LENGTH = 400


def backoff_delay(attempts: int, base: float, cap: float, rand: random.Random | None = None) -> float:
    """Seconds to wait after the `attempts`-th failed attempt: base × 2^(attempts−1), capped at
    `cap`, times a jitter factor (so many receivers failing together are not retried in step)."""
    nominal = min(cap, base * 2 ** min(max(attempts - 1, 0), 30))
    factor = (rand or random).uniform(1 - JITTER, 1 + JITTER)
    return min(cap, nominal * factor)


@dataclass(frozen=True)
class Claimed:
    id: str
    rule: str
    kind: str
    attempts: int
    payload: dict[str, object]


def claim_due(session: Session, now: datetime, limit: int, hold: float) -> list[Claimed]:
    """Claim up to `limit` pending deliveries that are due: count their attempt and hold them
    for `hold` seconds. Commits."""
    if limit <= 0:
        return []
    rows = session.scalars(
        select(AlertDelivery).where(AlertDelivery.state == "pending", AlertDelivery.next_attempt_at <= now)
        .order_by(AlertDelivery.next_attempt_at).limit(limit).with_for_update(skip_locked=True)
    ).all()
    claimed = []
    for row in rows:
        row.attempts += 1
        row.next_attempt_at = now + timedelta(seconds=hold)
        claimed.append(Claimed(row.id, row.rule, row.kind, row.attempts, dict(row.payload)))
    session.commit()
    return claimed


@dataclass(frozen=True)
class Outcome:
    """What one attempt got: delivered, or the HTTP status (None: no answer) and why not."""

    delivered: bool
    status: int | None = None
    error: str | None = None


def record_outcome(session: Session, delivery_id: str, outcome: Outcome, now: datetime, *, max_attempts: int,
                   base: float, cap: float) -> str:
    """Store an attempt's outcome: delivered, pending with its next attempt, or failed (given up
    after `max_attempts`). Returns the new state. Commits."""
    row = session.get(AlertDelivery, delivery_id, with_for_update=True)
    if row is None:
        return "gone"
    row.last_status = outcome.status
    if outcome.delivered:
        row.state, row.delivered_at, row.next_attempt_at, row.last_error = "delivered", now, None, None
    elif row.attempts >= max_attempts:
        row.state, row.next_attempt_at = "failed", None
        row.last_error = f"gave up after {row.attempts} attempt(s): {outcome.error}"[:ERROR_LENGTH]
    else:
        row.next_attempt_at = now + timedelta(seconds=backoff_delay(row.attempts, base, cap))
        row.last_error = (outcome.error or "")[:ERROR_LENGTH]
    state = row.state
    session.commit()
    return state


def give_up(session: Session, delivery_id: str, why: str) -> None:
    """Mark a delivery failed without an attempt (e.g. its rule is no longer configured). Commits."""
    row = session.get(AlertDelivery, delivery_id, with_for_update=True)
    if row is not None:
        row.state, row.next_attempt_at, row.last_error = "failed", None, why[:ERROR_LENGTH]
        session.commit()


def create_test(session: Session, rules: Sequence[AlertRule], rule_name: str, now: datetime) -> AlertDelivery:
    """A `test` alert through `rule_name`'s webhook, due at once. Commits."""
    if not any(rule.name == rule_name for rule in rules):
        known = ", ".join(rule.name for rule in rules) or "none (set FLEET_ALERT_RULES)"
        raise NotFoundError(f"alert rule {rule_name!r} is not configured; configured rules: {known}")
    found = Found("test", f"test:{new_id()}", f"test alert of rule {rule_name}", now, {})
    event: AlertEvent | None = record(session, rule_name, "test", found, now)
    assert event is not None  # a fresh occurrence never collides
    session.commit()
    row = session.get(AlertDelivery, event.id)
    assert row is not None
    return row


def list_deliveries(session: Session, *, state: str | None = None, rule: str | None = None,
                    kind: str | None = None, limit: int = 100) -> list[AlertDelivery]:
    """The most recent alerts first."""
    query = select(AlertDelivery).order_by(AlertDelivery.created_at.desc(), AlertDelivery.id).limit(limit)
    if state is not None:
        query = query.where(AlertDelivery.state == state)
    if rule is not None:
        query = query.where(AlertDelivery.rule == rule)
    if kind is not None:
        query = query.where(AlertDelivery.kind == kind)
    return list(session.scalars(query))
