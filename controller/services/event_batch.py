"""Task events of an ingest batch recorded together: the rules of `tasks.stage_event`, at a
fraction of its cost.

`stage_event` costs about 1,700 Python calls per event through the ORM (a `get` with autoflush,
a duplicate query, a flush of the new row and the dirty task). Here a run of consecutive events
costs one SELECT of the tasks it names (locked, on PostgreSQL), one SELECT of their possibly
duplicate timeline rows, then one executemany UPDATE per set of changed columns, one
executemany INSERT of the new timeline rows and one executemany UPDATE of the devices'
`last_seen`. The decisions are the same, made in arrival order on plain rows: events of one
task in the order they came, a duplicate (same attempt, seq and kind) only moves `heard_at`,
`lifecycle.can_move` decides what is applied, `lifecycle.next_retry_at` schedules retries.

Left to `stage_event`, one event at a time and in order: events of a task the database does
not know (ad hoc tasks, foreign ids), and of a task whose outcome may change an account's
login status (`accounts.tracks_outcome`) — rare, and order across tasks matters only there.
See docs/architecture.md#ingest.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.util import identity_key

from controller.models import Device, Task, TaskEventRecord
from controller.services import accounts, finished, lifecycle, tasks
from controller.services.upsert import insert_ignore
from controller.warn_once import warn_once
from schemas.common import utcnow
from schemas.events import DEVICE_EVENTS, STATUS_OF_EVENT, EventKind, TaskEvent, TaskStatus

log = logging.getLogger("controller.services.tasks")

_CHUNK = 500  # ids per IN (...): below SQLite's and PostgreSQL's parameter limits
_READ = ("id", "device_id", "type", "account", "status", "attempt", "last_seq", "started_at",
         "max_retries", "retry_backoff")
# Statements built once (building an expression costs more CPU than running it on a small batch).
_TASKS = (select(*(getattr(Task, name) for name in _READ)).where(Task.id.in_(bindparam("ids", expanding=True)))
          .order_by(Task.id).with_for_update())
_TIMELINE = select(TaskEventRecord.task_id, TaskEventRecord.attempt, TaskEventRecord.seq, TaskEventRecord.event).where(
    TaskEventRecord.task_id.in_(bindparam("ids", expanding=True)))
_TIMELINE_AT = _TIMELINE.where(TaskEventRecord.seq.in_(bindparam("seqs", expanding=True)))
_UPDATES: dict[tuple[str, ...], Any] = {}  # UPDATE tasks by the columns it sets
_DEVICE_SEEN = update(Device).where(Device.id == bindparam("b_id")).values(last_seen=bindparam("b_now"))


class _Row:
    """A task as the batch sees it: the columns it read, and the names of those it changed."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.values = values
        self.dirty: set[str] = set()

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    def set(self, **changes: Any) -> None:
        self.values.update(changes)
        self.dirty.update(changes)


def stage_events(session: Session, events: Sequence[tuple[str, TaskEvent]]) -> None:
    """Stage `events` (topic device id, event), in arrival order, in the caller's transaction."""
    usable = [(device_id, event) for device_id, event in events if _usable(session, device_id, event)]
    if not usable:
        return
    session.flush()  # what the ORM staged before this run is in the database the reads below see
    rows = _load(session, sorted({event.task_id for _, event in usable}))
    usable, known = _own_device(session, usable, rows)
    seen = _existing(session, [e for _, e in usable if e.task_id in known])
    now = utcnow()
    inserts: list[dict[str, Any]] = []
    devices: set[str] = set()
    for device_id, event in usable:
        if event.task_id not in known:
            tasks.stage_event(session, device_id, event)  # ORM path, in arrival order
            continue
        key = (event.task_id, event.attempt, event.seq, event.event.value)
        if key in seen:
            if event.attempt == rows[event.task_id]["attempt"]:
                rows[event.task_id].set(heard_at=now)  # an answer to a re-send: no news
            continue
        seen.add(key)
        inserts.append(_record(rows[event.task_id], event, now))
        devices.add(device_id)
    _write(session, rows, inserts, devices, now)


def _usable(session: Session, device_id: str, event: TaskEvent) -> bool:
    """False (with a warning once per device) for an event `stage_event` would ignore outright."""
    if event.device_id != device_id:
        warn_once(session, "event-device", device_id,
                  "ignored task events on devices/%s/results that name another device (%s)", device_id, event.device_id)
        return False
    if event.event not in DEVICE_EVENTS:
        warn_once(session, "event-kind", device_id, "ignored %r events from device %s: only the controller writes them",
                  event.event.value, device_id)
        return False
    return True


def _load(session: Session, task_ids: list[str]) -> dict[str, _Row]:
    rows: dict[str, _Row] = {}
    for start in range(0, len(task_ids), _CHUNK):
        for found in session.connection().execute(_TASKS, {"ids": task_ids[start : start + _CHUNK]}).mappings():
            rows[found["id"]] = _Row(dict(found))
    return rows


def _own_device(session: Session, events: list[tuple[str, TaskEvent]],
                rows: dict[str, _Row]) -> tuple[list[tuple[str, TaskEvent]], set[str]]:
    """The events not about another device's task (those are dropped with the warning
    `stage_event` gives), and the ids of the tasks whose events this module records (the
    others go to `stage_event`)."""
    kept = []
    for device_id, event in events:
        row = rows.get(event.task_id)
        if row is not None and row["device_id"] != device_id:
            warn_once(session, "event-task", device_id, "ignored events from device %s about task %s, which belongs to "
                      "device %s", device_id, event.task_id, row["device_id"])
        else:
            kept.append((device_id, event))
    return kept, {task_id for task_id, row in rows.items() if not accounts.tracks_outcome(row["account"], row["type"])}


def _existing(session: Session, events: list[TaskEvent]) -> set[tuple[str, int, int, str]]:
    """(task, attempt, seq, kind) of the timeline rows these events might duplicate."""
    found: set[tuple[str, int, int, str]] = set()
    task_ids = sorted({event.task_id for event in events})
    seqs = sorted({event.seq for event in events})
    query, params = (_TIMELINE_AT, {"seqs": seqs}) if len(seqs) <= _CHUNK else (_TIMELINE, {})
    for start in range(0, len(task_ids), _CHUNK):
        rows = session.connection().execute(query, {**params, "ids": task_ids[start : start + _CHUNK]})
        found.update((t, a, s, e) for t, a, s, e in rows)
    return found


def _record(row: _Row, event: TaskEvent, now: datetime) -> dict[str, Any]:
    """Decide what `event` does to `row` (as `stage_event` does) and return its timeline row."""
    error = event.error.model_dump(mode="json", exclude_none=True) if event.error else None
    current, new = TaskStatus(row["status"]), STATUS_OF_EVENT[event.event]
    applied = event.attempt == row["attempt"] and lifecycle.can_move(current, new)
    if applied:
        _apply(row, event, new, error, now)
    else:
        log.debug("task %s: %s event of attempt %d not applied (status %s, attempt %d)",
                  row["id"], event.event.value, event.attempt, current.value, row["attempt"])
    if event.attempt == row["attempt"]:
        last = row["last_seq"]
        row.set(last_seq=event.seq if last is None else max(last, event.seq), heard_at=now, resends=0, resend_at=None)
    row.set(updated_at=now)
    return {
        "task_id": row["id"], "event": event.event.value, "attempt": event.attempt, "seq": event.seq, "at": event.at,
        "received_at": now, "progress": event.progress, "message": event.message, "result": event.result,
        "error": error, "details": event.details, "replay": event.replay, "applied": applied,
    }


def _apply(row: _Row, event: TaskEvent, new: TaskStatus, error: dict[str, Any] | None, now: datetime) -> None:
    """`tasks._apply` on a plain row."""
    row.set(status=new.value)
    if event.event == EventKind.STARTED and row["started_at"] is None:
        row.set(started_at=now)
    if event.progress is not None:
        row.set(progress=event.progress)
    if event.message is not None:
        row.set(message=event.message)
    if event.result is not None:
        row.set(result=event.result)
    if error is not None:
        row.set(error=error)
    if event.details is not None or new.is_final:
        row.set(details=event.details)  # a QR code to scan is stale once the task ends
    if new.is_final:
        retry_at = lifecycle.next_retry_at(new, row["attempt"], row["max_retries"], row["retry_backoff"], error, now)
        row.set(finished_at=now, retry_at=retry_at)
        if retry_at is not None:
            log.info("task %s %s (attempt %d); attempt %d at %s", row["id"], new.value, row["attempt"],
                     row["attempt"] + 1, retry_at.isoformat(timespec="seconds"))


def _write(session: Session, rows: dict[str, _Row], inserts: list[dict[str, Any]], devices: set[str],
           now: datetime) -> None:
    """The batch's statements: task UPDATEs grouped by the columns they change, the timeline
    INSERT, the devices' `last_seen`; ORM copies of these tasks are expired, not stale."""
    connection = session.connection()
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for task_id, row in rows.items():
        if "finished_at" in row.dirty:
            finished.note(session, row["type"], row["status"], row["started_at"], row["finished_at"])
        if row.dirty:
            names = tuple(sorted(row.dirty))
            groups.setdefault(names, []).append({"b_id": task_id, **{f"b_{n}": row[n] for n in names}})
    for names, params in groups.items():
        statement = _UPDATES.get(names)
        if statement is None:
            statement = update(Task).where(Task.id == bindparam("b_id")).values({n: bindparam(f"b_{n}") for n in names})
            _UPDATES[names] = statement
        connection.execute(statement, params)
    if inserts:  # a row another controller recorded meanwhile is skipped (unique index, migration 0009)
        insert_ignore(session, TaskEventRecord, inserts)
    if devices:
        connection.execute(_DEVICE_SEEN, [{"b_id": device_id, "b_now": now} for device_id in sorted(devices)])
    for task_id, row in rows.items():
        cached = session.identity_map.get(identity_key(Task, task_id))
        if cached is not None and row.dirty:
            session.expire(cached)
