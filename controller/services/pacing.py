"""Pacing: at least a rule's interval (plus a random jitter) between the tasks of one type of
one account, e.g. seed 003's chats every 30–120 s (interval 30, jitter 90).

A task created under a rule gets `run_at = max(requested run_at or now, the previous paced
task's run_at + interval + U(0, jitter))`, and waits `queued` until then like any task with a
`run_at` (docs/architecture.md#schedules). The previous run_at is kept per (account, type) in
`pacing_slots`; the create locks that row (`SELECT … FOR UPDATE` on PostgreSQL; SQLite's
writes are serialised by `BEGIN IMMEDIATE`) in the transaction that inserts the task, so two
creates at once, on one controller or two, never get the same slot. A slot is used even if its
task is later canceled: the rule spaces creations, not outcomes.

The release keeps the spacing on the wire too (`hold_back`): a paced task is published no
sooner than `interval` after the account's previous paced task of the type was, so one
released late (a busy controller) does not bring the next one closer to it.
"""

from __future__ import annotations

import logging
import random
from datetime import datetime, timedelta, timezone

from sqlalchemy import delete, or_, select
from sqlalchemy.orm import Session

from controller.models import PacingRule, PacingSlot
from controller.services.errors import NotFoundError
from controller.services.upsert import insert_ignore
from schemas.common import utcnow
from schemas.schedules import ALL_ACCOUNTS, PacingList, PacingRuleIn, PacingRuleOut

log = logging.getLogger(__name__)

NEVER = datetime(1970, 1, 1, tzinfo=timezone.utc)  # the slot of an account with no paced task yet


def rule_for(session: Session, account: str, task_type: str) -> PacingRule | None:
    """The account's own rule for the type, else the type's rule for every account."""
    rules = {rule.account: rule for rule in session.scalars(
        select(PacingRule).where(PacingRule.task_type == task_type,
                                 or_(PacingRule.account == account, PacingRule.account == ALL_ACCOUNTS))
    )}
    return rules.get(account) or rules.get(ALL_ACCOUNTS)


def _slot(session: Session, account: str, task_type: str) -> PacingSlot:
    """The (account, type) slot row, created if missing, locked for this transaction."""
    insert_ignore(session, PacingSlot, {"account": account, "task_type": task_type, "last_run_at": NEVER})
    return session.scalars(
        select(PacingSlot).where(PacingSlot.account == account, PacingSlot.task_type == task_type).with_for_update()
    ).one()


def paced_run_at(
    session: Session, account: str | None, task_type: str, wanted: datetime, now: datetime
) -> datetime | None:
    """The run_at a new task of `account` and `task_type` gets under a pacing rule (None when no
    rule applies), its slot taken in the caller's transaction: at `wanted` (the requested
    run_at, or now) or later, never closer than the rule allows to the previous paced task."""
    if account is None:
        return None
    rule = rule_for(session, account, task_type)
    if rule is None:
        return None
    slot = _slot(session, account, task_type)
    gap = rule.interval + (random.uniform(0, rule.jitter) if rule.jitter else 0.0)
    run_at = max(wanted, slot.last_run_at + timedelta(seconds=gap))
    slot.last_run_at = run_at
    if run_at <= now:
        slot.last_sent_at = now  # published by the create itself
    if run_at > wanted:
        log.info("%s task of account %s paced to %s (rule %s: %g s + up to %g s)", task_type, account,
                 run_at.isoformat(timespec="seconds"), rule.account, rule.interval, rule.jitter)
    return run_at


def hold_back(session: Session, account: str | None, task_type: str, now: datetime,
              rules: dict[tuple[str, str], PacingRule | None]) -> datetime | None:
    """At a paced task's release: the time it must wait for when the account's previous paced
    task of the type was published less than the interval ago, else None (and the slot notes
    it is published now). `rules` caches the rules looked up in one pass."""
    if account is None:
        return None
    key = (account, task_type)
    if key not in rules:
        rules[key] = rule_for(session, account, task_type)
    rule = rules[key]
    if rule is None:
        return None
    slot = _slot(session, account, task_type)
    if slot.last_sent_at is not None and slot.last_sent_at + timedelta(seconds=rule.interval) > now:
        return slot.last_sent_at + timedelta(seconds=rule.interval)
    slot.last_sent_at = now
    return None


def _out(rule: PacingRule, last: datetime | None) -> PacingRuleOut:
    return PacingRuleOut(account=rule.account, type=rule.task_type, interval=rule.interval, jitter=rule.jitter,
                         updated_at=rule.updated_at, last_run_at=None if last == NEVER else last)


def _last(session: Session, rule: PacingRule) -> datetime | None:
    slot = session.get(PacingSlot, (rule.account, rule.task_type))
    return slot.last_run_at if slot is not None else None


def set_rule(session: Session, body: PacingRuleIn) -> PacingRuleOut:
    """Create or replace the rule of (account, type). Commits."""
    rule = session.get(PacingRule, (body.account, body.type), with_for_update=True)
    if rule is None:
        rule = PacingRule(account=body.account, task_type=body.type)
        session.add(rule)
    rule.interval, rule.jitter, rule.updated_at = body.interval, body.jitter, utcnow()
    session.commit()
    log.info("pacing rule: %s tasks of account %s at least %g s apart (+ up to %g s)",
             body.type, body.account, body.interval, body.jitter)
    return _out(rule, _last(session, rule))


def list_rules(session: Session) -> PacingList:
    rules = session.scalars(select(PacingRule).order_by(PacingRule.account, PacingRule.task_type)).all()
    return PacingList(items=[_out(rule, _last(session, rule)) for rule in rules])


def delete_rule(session: Session, account: str, task_type: str) -> None:
    """Remove the rule of (account, type); tasks already paced keep their run_at. Commits."""
    gone = session.execute(
        delete(PacingRule).where(PacingRule.account == account, PacingRule.task_type == task_type)
        .returning(PacingRule.account)
    ).first()
    if not gone:
        session.rollback()
        raise NotFoundError(f"no pacing rule for account {account!r} and type {task_type!r}; "
                            "list them with GET /api/v1/pacing")
    session.commit()
