"""Retention (docs/architecture.md#housekeeping) on a real SQLite file and a real PostgreSQL
database: `retention.prune` deletes what is older than each setting, in batches, and keeps the
recent rows, a device's latest presence row, unfinished tasks and tasks waiting for a retry,
and pending alert deliveries; a dry run counts the same rows and deletes none."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from config.settings_housekeeping import HousekeepingSettings
from controller.db import create_db_engine, create_sessionmaker, migrate
from controller.models import AlertDelivery, Device, DeviceConnection, IdempotencyKey, Task, TaskEventRecord
from controller.services import retention
from controller.services.task_rows import new_task
from schemas.common import utcnow

pytestmark = pytest.mark.integration

OLD_EVENTS = 25  # more than one batch of 10


@pytest.fixture(params=["sqlite", "postgres"])
def sessions(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    url = request.getfixturevalue("postgres_url") if request.param == "postgres" else f"sqlite:///{tmp_path / 'r.db'}"
    engine = create_db_engine(url)
    migrate(engine)
    yield create_sessionmaker(engine)
    engine.dispose()


def _task(task_id: str, status: str, finished_days: float | None, **values: Any) -> Task:
    now = utcnow()
    task = new_task(id=task_id, device_id="d1", type="ping", account=None, params={}, origin="api",
                    created_at=now - timedelta(days=200), expires_at=None, timeout=None, max_retries=0,
                    retry_backoff=5.0)
    task.status = status
    task.finished_at = None if finished_days is None else now - timedelta(days=finished_days)
    for key, value in values.items():
        setattr(task, key, value)
    return task


def _seed(session: Session) -> None:
    now, day = utcnow(), timedelta(days=1)
    session.add_all([Device(id="d1", status="online"), Device(id="d2", status="offline")])
    session.flush()
    session.add_all([
        DeviceConnection(device_id="d1", state="online", session_id="a", at=now - 40 * day),
        DeviceConnection(device_id="d1", state="offline", session_id="a", at=now - 35 * day),
        DeviceConnection(device_id="d1", state="online", session_id="b", at=now - day),
        DeviceConnection(device_id="d2", state="offline", session_id="c", at=now - 40 * day),  # its latest: kept
    ])
    session.add_all([
        _task("t-old", "succeeded", 100),
        _task("t-recent", "succeeded", 1),
        _task("t-retrying", "failed", 100, retry_at=now + day),
        _task("t-running", "running", None),
    ])
    session.flush()
    session.add_all([TaskEventRecord(task_id="t-running", event="progress", seq=n, at=now - 40 * day,
                                     received_at=now - 40 * day) for n in range(OLD_EVENTS)])
    session.add_all([TaskEventRecord(task_id="t-old", event="succeeded", seq=0, at=now - 100 * day,
                                     received_at=now - 100 * day),
                     TaskEventRecord(task_id="t-recent", event="succeeded", seq=0, at=now, received_at=now)])
    for name, state, age in (("a-old", "delivered", 40), ("a-pending", "pending", 40), ("a-new", "failed", 1)):
        session.add(AlertDelivery(id=name, rule="r", kind="task_failed", subject=name, occurrence="1", summary="s",
                                  payload={}, state=state, created_at=now - age * day))
    session.add_all([IdempotencyKey(endpoint="POST /api/v1/tasks", key=key, request_sha256="0" * 64, status_code=201,
                                    response={}, expires_at=now + offset * day)
                     for key, offset in (("gone", -1), ("kept", 1))])
    session.commit()


def _left(session: Session) -> dict[str, Any]:
    return {
        "connections": sorted(session.execute(select(DeviceConnection.device_id, DeviceConnection.session_id)
                                              .where(DeviceConnection.state != "x")).all()),
        "tasks": sorted(session.scalars(select(Task.id))),
        "events": session.scalar(select(func.count()).select_from(TaskEventRecord)),
        "alerts": sorted(session.scalars(select(AlertDelivery.id))),
        "keys": sorted(session.scalars(select(IdempotencyKey.key))),
    }


def test_old_rows_go_recent_rows_stay(sessions: sessionmaker[Session]) -> None:
    settings = HousekeepingSettings(retention_tasks="90d")  # type: ignore[arg-type]  # parsed by its validator
    with sessions() as session:
        _seed(session)
        before = _left(session)
        counted, never = retention.prune(session, settings, utcnow(), dry_run=True)
        assert _left(session) == before and never == []
        deleted, _ = retention.prune(session, settings, utcnow(), batch=10)
        assert deleted == counted == {"task_events": OLD_EVENTS + 1, "device_connections": 2, "tasks": 1,
                                      "alert_deliveries": 1, "idempotency_keys": 1}
        assert _left(session) == {
            "connections": [("d1", "b"), ("d2", "c")],
            "tasks": ["t-recent", "t-retrying", "t-running"],
            "events": 1,
            "alerts": ["a-new", "a-pending"],
            "keys": ["kept"],
        }
        assert retention.prune(session, settings, utcnow(), batch=10)[0] == dict.fromkeys(deleted, 0)


def test_never_keeps_everything(sessions: sessionmaker[Session]) -> None:
    settings = HousekeepingSettings(retention_task_events="never", retention_connections="never",  # type: ignore[arg-type]
                                    retention_alert_deliveries="never")
    with sessions() as session:
        _seed(session)
        before = _left(session)
        deleted, never = retention.prune(session, settings, utcnow())
        assert never == ["task_events", "device_connections", "tasks", "alert_deliveries"]
        assert deleted == {"idempotency_keys": 1}
        assert _left(session) == {**before, "keys": ["kept"]}
