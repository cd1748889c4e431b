"""`event_batch.stage_events` against `tasks.stage_event`: the same events, recorded one at a
time through the ORM in one real SQLite database and as one batch in another, leave the same
tasks, timelines and accounts — duplicates, out-of-order and old-attempt events, retries,
another device's task, unknown (ad hoc) tasks and a login's account included."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import String, cast, select
from sqlalchemy.orm import Session, sessionmaker

from controller.db import create_db_engine, create_sessionmaker, migrate
from controller.models import Account, Device, Task, TaskEventRecord
from controller.services import event_batch, tasks
from controller.services.task_rows import new_task
from schemas.common import utcnow
from schemas.events import EventKind, TaskError, TaskEvent
from tests.services_kit import event

_TIMES = ("created_at", "updated_at", "dispatched_at", "started_at", "finished_at", "heard_at", "resend_at",
          "retry_at", "expires_at")
A, S, P, OK, FAIL = EventKind.ACCEPTED, EventKind.STARTED, EventKind.PROGRESS, EventKind.SUCCEEDED, EventKind.FAILED


def seed(sessions: sessionmaker[Session]) -> None:
    with sessions() as session:
        now = utcnow()
        for device_id in ("pc-1", "pc-2"):
            session.add(Device(id=device_id, status="online", session_id="s1", created_at=now))
        session.flush()
        for task_id, device_id, kind, account, retries in (
            ("plain", "pc-1", "echo", None, 0), ("retried", "pc-1", "echo", None, 2), ("dup", "pc-2", "echo", None, 0),
            ("theirs", "pc-2", "echo", None, 0), ("login", "pc-1", "login", "alice", 0),
        ):
            task = new_task(id=task_id, device_id=device_id, type=kind, origin="api", account=account,
                            max_retries=retries, params={"platform": "reference"})
            task.status = "dispatched"
            session.add(task)
        session.commit()


def events() -> list[tuple[str, TaskEvent]]:
    failed = TaskError(code="boom", message="it broke")
    return [
        ("pc-1", event("plain", "pc-1", A, 0)),
        ("pc-2", event("dup", "pc-2", A, 0)),
        ("pc-1", event("plain", "pc-1", S, 1, details={"qr": "x"})),
        ("pc-2", event("dup", "pc-2", A, 0)),  # a duplicate within the batch
        ("pc-1", event("plain", "pc-1", P, 2, progress=40, message="half")),
        ("pc-1", event("plain", "pc-1", A, 3)),  # going back: kept, not applied
        ("pc-1", event("retried", "pc-1", S, 0)),
        ("pc-1", event("theirs", "pc-1", A, 0)),  # another device's task: ignored
        ("pc-1", event("adhoc-1", "pc-1", A, 0)),  # unknown task: recorded ad hoc
        ("pc-1", event("retried", "pc-1", FAIL, 1, error=failed)),  # retry scheduled
        ("pc-1", event("login", "pc-1", OK, 0, result={"logged_in": True})),  # account follows
        ("pc-1", event("plain", "pc-1", OK, 4, result={"echo": 1})),
        ("pc-1", event("plain", "pc-1", FAIL, 5, error=failed)),  # after the end: refused
        ("pc-1", event("retried", "pc-1", S, 9, attempt=2)),  # an attempt that does not exist yet
        ("pc-2", event("dup", "pc-1", S, 1)),  # names another device than its topic
        ("pc-1", event("adhoc-1", "pc-1", S, 1)),
        ("pc-2", event("dup", "pc-2", EventKind.RETRYING, 2)),  # only the controller writes it
    ]


def snapshot(sessions: sessionmaker[Session]) -> dict[str, Any]:
    with sessions() as session:
        found: dict[str, Any] = {}
        for task in session.scalars(select(Task).order_by(Task.id)):
            row = {c.key: getattr(task, c.key) for c in Task.__table__.columns}
            for name in _TIMES:
                row[name] = row[name] is not None
            delay = task.retry_at - task.finished_at if task.retry_at and task.finished_at else None
            timeline = session.execute(
                select(TaskEventRecord.event, TaskEventRecord.attempt, TaskEventRecord.seq, TaskEventRecord.progress,
                       TaskEventRecord.message, TaskEventRecord.result, TaskEventRecord.error, TaskEventRecord.details,
                       TaskEventRecord.replay, TaskEventRecord.applied)
                .where(TaskEventRecord.task_id == task.id).order_by(TaskEventRecord.id)
            ).all()
            found[task.id] = (row, delay, [tuple(r) for r in timeline])
        found["accounts"] = [(a.name, a.login_status) for a in session.scalars(select(Account))]
        found["seen"] = sorted((d.id, d.last_seen is not None) for d in session.scalars(select(Device)))
        return found


def stored(sessions: sessionmaker[Session]) -> list[tuple[Any, ...]]:
    """The timeline as the database holds it (text, no type processing on the way back), the
    batch's own timestamp `received_at` as its shape only (digits masked); in task order, as
    `snapshot` is (the batch writes ad hoc tasks' rows first)."""
    columns = [cast(getattr(TaskEventRecord, name), String) for name in (
        "task_id", "event", "attempt", "seq", "at", "progress", "message", "result", "error", "details", "replay",
        "applied")]
    with sessions() as session:
        rows = session.execute(select(*columns, cast(TaskEventRecord.received_at, String))
                               .order_by(TaskEventRecord.task_id, TaskEventRecord.id))
        return [(*row[:-1], re.sub(r"\d", "0", row[-1])) for row in rows]


def stamped_between(sessions: sessionmaker[Session], start: datetime, end: datetime) -> bool:
    """Every timestamp the events wrote reads back within [start, end] (no zone shifted)."""
    with sessions() as session:
        times: list[datetime | None] = list(session.scalars(select(TaskEventRecord.received_at)))
        for task in session.scalars(select(Task).where(Task.heard_at.is_not(None))):
            times += [task.heard_at, task.updated_at]
        return bool(times) and all(time is not None and start <= time <= end for time in times)


def database(path: Path) -> sessionmaker[Session]:
    engine = create_db_engine(f"sqlite:///{path}")
    migrate(engine)
    return create_sessionmaker(engine)


def test_a_batch_records_what_one_event_at_a_time_records(tmp_path: Path) -> None:
    one_by_one, batched = database(tmp_path / "one.db"), database(tmp_path / "batch.db")
    seed(one_by_one)
    seed(batched)
    with one_by_one() as session:
        for device_id, task_event in events():
            tasks.stage_event(session, device_id, task_event)
        session.commit()
    with batched() as session:
        event_batch.stage_events(session, events())
        session.commit()
    expected, got = snapshot(one_by_one), snapshot(batched)
    assert got == expected
    assert got["retried"][1] == timedelta(seconds=5), "the retry is scheduled after the default backoff"
    assert got["dup"][0]["status"] == "accepted" and len(got["dup"][2]) == 1
    assert got["accounts"] == [("alice", "logged_in")] and "adhoc-1" in got


def test_a_duplicate_only_moves_heard_at(tmp_path: Path) -> None:
    sessions = database(tmp_path / "c.db")
    seed(sessions)
    with sessions() as session:
        event_batch.stage_events(session, [("pc-1", event("plain", "pc-1", A, 0))])
        session.commit()
        before = session.get(Task, "plain")
        assert before is not None and before.heard_at is not None
        heard, updated = before.heard_at, before.updated_at
    with sessions() as session:
        event_batch.stage_events(session, [("pc-1", event("plain", "pc-1", A, 0))])
        session.commit()
        after = session.get(Task, "plain")
        assert after is not None and after.heard_at is not None and after.heard_at > heard
        assert after.updated_at == updated and after.status == "accepted"
        count = session.scalars(select(TaskEventRecord.id).where(TaskEventRecord.task_id == "plain")).all()
        assert len(count) == 1, "a duplicate adds no timeline row"


def test_orm_copies_of_batched_tasks_are_not_stale(tmp_path: Path) -> None:
    sessions = database(tmp_path / "c.db")
    seed(sessions)
    with sessions() as session:
        loaded = session.get(Task, "plain")
        assert loaded is not None and loaded.status == "dispatched"
        event_batch.stage_events(session, [("pc-1", event("plain", "pc-1", A, 0))])
        assert loaded.status == "accepted", "the identity map's copy was expired and re-read"


def test_a_batch_stores_values_as_the_orm_does(tmp_path: Path) -> None:
    """The batched path's executemany statements store each value in exactly the text the ORM's
    per-event path stores (a JSON null stays JSON, timestamps keep one format)."""
    one_by_one, batched = database(tmp_path / "one.db"), database(tmp_path / "batch.db")
    seed(one_by_one)
    seed(batched)
    same = events()  # the same `at` values on both sides
    with one_by_one() as session:
        for device_id, task_event in same:
            tasks.stage_event(session, device_id, task_event)
        session.commit()
    start = utcnow()
    with batched() as session:
        event_batch.stage_events(session, same)
        session.commit()
    assert stored(batched) == stored(one_by_one)
    assert any(row[7] == "null" for row in stored(batched)), "JSON null, as the ORM writes it, not SQL NULL"
    assert stamped_between(batched, start, utcnow())
