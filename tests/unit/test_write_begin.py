"""SQLite write transactions wait for a held write lock by trying `BEGIN IMMEDIATE` again every
millisecond or two (`controller.db._begin_write`), start as soon as it is free, and give up
with "database is locked" once the busy timeout passed."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest
from sqlalchemy import Engine, event, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from controller import db
from controller.models import Device
from tests.harness import wait_for
from tests.services_kit import go_online


def _begins(engine: Engine) -> list[str]:
    seen: list[str] = []
    event.listen(engine, "before_cursor_execute",
                 lambda _c, _cur, statement, *_a: seen.append(statement) if statement == "BEGIN IMMEDIATE" else None)
    return seen


def _hold(engine: Engine) -> sqlite3.Connection:
    """Another process's writer in the middle of a transaction."""
    database = engine.url.database
    assert database is not None
    holder = sqlite3.connect(Path(database), isolation_level=None, timeout=0)
    holder.execute("BEGIN IMMEDIATE")
    return holder


def test_a_writer_retries_while_the_lock_is_held_and_starts_once_it_is_free(
    engine: Engine, sessions: sessionmaker[Session]
) -> None:
    go_online(sessions, "pc-01")
    begins = _begins(engine)
    holder = _hold(engine)
    done: list[str] = []

    def write() -> None:
        with sessions() as session:
            session.execute(update(Device).values(name="renamed"))
            session.commit()
        done.append("committed")

    writer = threading.Thread(target=write)
    writer.start()
    try:
        wait_for(lambda: len(begins) >= 3, 10, 0.001, "the writer trying BEGIN IMMEDIATE again")
        assert done == [], "it must not write while the lock is held"
    finally:
        holder.rollback()
        holder.close()
    writer.join(10)
    assert done == ["committed"]
    with sessions() as session:
        assert session.scalar(select(Device.name)) == "renamed"
        timeout = session.connection().exec_driver_sql("PRAGMA busy_timeout").scalar()
    assert timeout == db.SQLITE_BUSY_TIMEOUT_MS, "statements inside a transaction keep the busy timeout"


def test_a_writer_gives_up_once_the_busy_timeout_passed(
    engine: Engine, sessions: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db, "SQLITE_BUSY_TIMEOUT_MS", 50)
    holder = _hold(engine)
    try:
        with sessions() as session, pytest.raises(OperationalError, match="database is locked"):
            session.execute(update(Device).values(name="never"))
    finally:
        holder.rollback()
        holder.close()
