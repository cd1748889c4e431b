"""Idempotent creates on a real PostgreSQL server (issue 14): the SQLite checks of
`tests/unit/test_idempotency.py` on a fresh database, and real races between threads that all
looked for the key (or the task id) before any of them wrote: one task, every thread answered
with it."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from controller.db import create_db_engine, create_sessionmaker, migrate
from controller.models import FileChunk
from controller.services import file_store, files, idempotency, task_create
from controller.services.idempotency import Answer
from schemas.api import TaskCreate
from schemas.common import utcnow
from tests.services_kit import FakePublisher, go_online
from tests.unit import test_idempotency as kit

pytestmark = pytest.mark.integration
RACERS = 4


@pytest.fixture
def pg_sessions(postgres_url: str) -> Iterator[sessionmaker[Session]]:
    engine = create_db_engine(postgres_url)
    migrate(engine)
    yield create_sessionmaker(engine)
    engine.dispose()


@pytest.mark.parametrize("check", kit.CHECKS, ids=lambda check: check.__name__)
def test_on_postgresql(check: Callable[..., None], pg_sessions: sessionmaker[Session],
                       monkeypatch: pytest.MonkeyPatch) -> None:
    if "race" in check.__name__:
        check(pg_sessions, FakePublisher(), monkeypatch)
    else:
        check(pg_sessions, FakePublisher())


def all_at_once(pg_sessions: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch,
                send: Callable[[FakePublisher], Answer]) -> list[Answer]:
    """`send` from RACERS threads, each held (after its look for an earlier create, before its
    INSERT) until all got there: they then write at once, and all but one lose."""
    gate = threading.Barrier(RACERS, timeout=30)
    real = task_create._api_task

    def held(*args: Any, **kwargs: Any) -> Any:
        gate.wait()
        return real(*args, **kwargs)

    monkeypatch.setattr(task_create, "_api_task", held)
    answers: list[Answer] = []
    publisher = FakePublisher()

    def run() -> None:
        answers.append(send(publisher))

    threads = [threading.Thread(target=run) for _ in range(RACERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(answers) == RACERS, "a racer failed (its error is printed above)"
    assert len(publisher.sent) == 1, "only the winner published"
    return answers


@pytest.mark.parametrize("by", ["key", "id"])
def test_racing_creates_make_one_task(pg_sessions: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch, by: str) -> None:
    go_online(pg_sessions, "pc-01")
    body = TaskCreate(device_id="pc-01", type="ping", id="raced" if by == "id" else None)
    key = "raced-key" if by == "key" else None
    answers = all_at_once(pg_sessions, monkeypatch, lambda publisher: kit.create(pg_sessions, publisher, body, key))
    assert sorted(answer.replayed for answer in answers) == [False] + [True] * (RACERS - 1)
    assert len({answer.body["id"] for answer in answers}) == 1 and kit.count_tasks(pg_sessions) == 1


def test_shared_link_key_and_orphan_pieces(pg_sessions: sessionmaker[Session]) -> None:
    with pg_sessions() as session:
        first = files.shared_url_key(session)
    with pg_sessions() as session:
        assert files.shared_url_key(session) == first and len(first) == 64
    with pg_sessions() as session:
        session.add(FileChunk(file_id="gone", seq=0, data=b"x", created_at=utcnow() - timedelta(days=2)))
        session.add(FileChunk(file_id="streaming", seq=0, data=b"y", created_at=utcnow()))
        session.commit()
        assert file_store.prune_orphans(session, utcnow()) == 1
        assert idempotency.prune(session, utcnow()) == 0
