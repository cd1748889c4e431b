"""Two controllers' ingest writers recording the same device messages at the same moment on
PostgreSQL (each controller receives every message): two threads, two connections, a barrier
so their transactions overlap. Exactly one timeline row per event, one state transition, one
device and one ad hoc task row, and no error (docs/architecture.md#several-controllers)."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from controller.db import create_db_engine, create_sessionmaker, migrate
from controller.models import Device, DeviceConnection, Task, TaskEventRecord
from controller.services import devices, event_batch, task_create, tasks
from schemas.api import TaskCreate
from schemas.events import EventKind, TaskSummary
from schemas.status import DeviceStatus
from tests.services_kit import FakePublisher, event, go_online

pytestmark = pytest.mark.integration

ROUNDS = 20


def _both(sessions: sessionmaker[Session], work: Callable[[Session], None]) -> list[BaseException]:
    """Run `work` in two threads at once, each in its own session, committing; their errors."""
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with sessions() as session:
                barrier.wait(10)
                work(session)
                session.commit()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return errors


def test_same_events_recorded_by_two_writers_at_once(postgres_url: str) -> None:
    engine = create_db_engine(postgres_url)
    try:
        migrate(engine)
        sessions = create_sessionmaker(engine)
        go_online(sessions, "pc-01", "s1")
        for round_ in range(ROUNDS):
            with sessions() as session:
                task_id = task_create.create_task(session, TaskCreate(device_id="pc-01", type="echo"), FakePublisher()).id
            batch = [("pc-01", event(task_id, "pc-01", kind, seq)) for seq, kind in
                     enumerate([EventKind.ACCEPTED, EventKind.STARTED, EventKind.SUCCEEDED])]
            assert _both(sessions, lambda s, b=batch: event_batch.stage_events(s, b)) == []
            adhoc = f"adhoc-{round_}"
            summary = TaskSummary(type="echo", params={})
            first = [("pc-02", event(adhoc, "pc-02", EventKind.ACCEPTED, 0, task=summary))]
            assert _both(sessions, lambda s, f=first: tasks.stage_event(s, *f[0]) and None) == []
            status = DeviceStatus(device_id=f"new-{round_}", state="online", session_id="s1")
            assert _both(sessions, lambda s, st=status: devices.stage_status(s, st.device_id, st) and None) == []
            with sessions() as session:
                rows = session.scalars(select(TaskEventRecord.event).where(TaskEventRecord.task_id == task_id)).all()
                assert sorted(rows) == ["accepted", "started", "succeeded"], rows
                assert tasks.get_task(session, task_id).status == "succeeded"
                assert session.scalar(select(func.count()).where(TaskEventRecord.task_id == adhoc)) == 1
                assert session.get(Task, adhoc) is not None
                births = select(func.count()).where(DeviceConnection.device_id == f"new-{round_}")
                assert session.scalar(births) == 1
        with sessions() as session:
            assert session.scalar(select(func.count()).select_from(Device)) == ROUNDS + 2
        print(f"\n{ROUNDS} rounds of two writers recording the same events, ad hoc task and birth at once: "
              "one row each, no error")
    finally:
        engine.dispose()


MIGRATE = "import sys; from controller.db import open_database; open_database(sys.argv[1]).dispose(); print('migrated')"


def test_two_processes_migrate_one_fresh_sqlite_file(tmp_path: Path) -> None:
    """SQLite: the migration's transaction begins with BEGIN IMMEDIATE, so two processes that
    open one fresh file at once migrate one after the other."""
    for round_ in range(5):
        url = f"sqlite:///{tmp_path / f'round-{round_}' / 'controller.db'}"
        runs = [subprocess.Popen([sys.executable, "-c", MIGRATE, url], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
                for _ in range(2)]
        outputs = [run.communicate(timeout=120)[0].decode() for run in runs]
        assert all(run.returncode == 0 and "migrated" in out for run, out in zip(runs, outputs)), outputs
