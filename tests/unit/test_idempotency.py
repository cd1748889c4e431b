"""Idempotent creates (issue 14) through the services on a real SQLite database: the same
`Idempotency-Key` or client-chosen task `id` with the same body creates one task and answers
the first answer again; with another body it is refused; a lost INSERT race answers the
winner's result; expired keys are new again and pruned.

Each `check_*` takes a sessionmaker, so `tests/integration/test_idempotency_postgres.py` runs
the same checks on PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from controller.models import IdempotencyKey, Task
from controller.services import broadcasts, idempotency, task_create
from controller.services.errors import ServiceError
from controller.services.idempotency import Answer, Claim, IdempotencyKeyReusedError, TaskIdTakenError
from schemas.api import BroadcastCreate, TaskBatchCreate, TaskCreate
from schemas.common import utcnow
from tests.services_kit import FakePublisher, go_online

TTL = 3600.0


def count_tasks(sessions: sessionmaker[Session]) -> int:
    with sessions() as session:
        return int(session.scalar(select(func.count()).select_from(Task)) or 0)


def create(sessions: sessionmaker[Session], publisher: FakePublisher, body: TaskCreate, key: str | None) -> Answer:
    with sessions() as session:
        return task_create.create_task_once(
            session, body, publisher, idempotency.claim("POST /api/v1/tasks", key, body), TTL
        )


def check_same_key_same_body_replays(sessions: sessionmaker[Session], publisher: FakePublisher) -> None:
    go_online(sessions, "pc-01")
    body = TaskCreate(device_id="pc-01", type="echo", params={"message": "once"})
    first = create(sessions, publisher, body, "key-1")
    again = create(sessions, publisher, TaskCreate.model_validate_json(body.model_dump_json()), '"key-1"')
    assert (first.replayed, again.replayed) == (False, True)
    assert again.body == first.body and again.status_code == first.status_code == 201
    assert count_tasks(sessions) == 1 and len(publisher.sent) == 1, "the replay neither created nor published"
    other = create(sessions, publisher, body, "key-2")  # a new key is a new request
    assert not other.replayed and other.body["id"] != first.body["id"] and count_tasks(sessions) == 2
    plain = create(sessions, publisher, body, None)  # no key: no promise
    assert not plain.replayed and count_tasks(sessions) == 3


def check_same_key_other_body_is_refused(sessions: sessionmaker[Session], publisher: FakePublisher) -> None:
    go_online(sessions, "pc-01")
    create(sessions, publisher, TaskCreate(device_id="pc-01", type="echo", params={"message": "a"}), "k")
    with pytest.raises(IdempotencyKeyReusedError) as refused:
        create(sessions, publisher, TaskCreate(device_id="pc-01", type="echo", params={"message": "b"}), "k")
    assert refused.value.status_code == 422 and "'k' was already used" in refused.value.detail
    assert count_tasks(sessions) == 1
    # the key belongs to its endpoint: the same key on the batch endpoint is another request
    batch = TaskBatchCreate(tasks=[TaskCreate(device_id="pc-01", type="ping")])
    with sessions() as session:
        answer = task_create.create_tasks_once(
            session, batch.tasks, publisher, idempotency.claim("POST /api/v1/tasks/batch", "k", batch), TTL
        )
    assert not answer.replayed and count_tasks(sessions) == 2


def check_client_id(sessions: sessionmaker[Session], publisher: FakePublisher) -> None:
    go_online(sessions, "pc-01")
    body = TaskCreate(id="order-17", device_id="pc-01", type="echo", params={"message": "x"}, ttl=60)
    first = create(sessions, publisher, body, None)
    assert first.body["id"] == "order-17" and not first.replayed
    again = create(sessions, publisher, body, None)
    assert again.replayed and again.body["id"] == "order-17" and count_tasks(sessions) == 1
    with pytest.raises(TaskIdTakenError) as taken:
        create(sessions, publisher, body.model_copy(update={"params": {"message": "y"}}), None)
    assert taken.value.status_code == 409 and "'order-17' is already used" in taken.value.detail
    assert len(publisher.sent) == 1


def check_batch(sessions: sessionmaker[Session], publisher: FakePublisher) -> None:
    go_online(sessions, "pc-01")
    items = [TaskCreate(id=f"b-{n}", device_id="pc-01", type="ping") for n in range(3)]

    def send(tasks: list[TaskCreate], key: str | None) -> Answer:
        batch = TaskBatchCreate(tasks=tasks)
        with sessions() as session:
            return task_create.create_tasks_once(
                session, batch.tasks, publisher, idempotency.claim("POST /api/v1/tasks/batch", key, batch), TTL
            )

    first = send(items, None)
    again = send(items, None)  # every item has its id: the same batch again
    assert again.replayed and [t["id"] for t in again.body["items"]] == ["b-0", "b-1", "b-2"]
    with pytest.raises(TaskIdTakenError):  # one id of another, new batch is taken
        send([TaskCreate(id="b-1", device_id="pc-01", type="ping"), TaskCreate(id="b-9", device_id="pc-01", type="ping")],
             None)
    with pytest.raises(ServiceError) as twice:
        send([TaskCreate(id="d", device_id="pc-01", type="ping"), TaskCreate(id="d", device_id="pc-01", type="ping")], None)
    assert "tasks[1]: its id 'd' is also tasks[0]'s" in twice.value.detail
    keyed = [TaskCreate(device_id="pc-01", type="ping") for _ in range(2)]
    one, two = send(keyed, "batch-key"), send(keyed, "batch-key")
    assert two.replayed and two.body == one.body and not first.replayed
    assert count_tasks(sessions) == 5


def check_broadcast(sessions: sessionmaker[Session], publisher: FakePublisher) -> None:
    for device_id in ("pc-01", "pc-02"):
        go_online(sessions, device_id)
    body = BroadcastCreate(type="ping")

    def send(key: str) -> Answer:
        with sessions() as session:
            return broadcasts.create_broadcast_once(
                session, body, publisher, idempotency.claim("POST /api/v1/broadcasts", key, body), TTL
            )

    first, again = send("b"), send("b")
    assert again.replayed and again.body == first.body and len(first.body["task_ids"]) == 2
    assert count_tasks(sessions) == 2 and len(publisher.sent) == 1


def check_expired_keys_are_new_and_pruned(sessions: sessionmaker[Session], publisher: FakePublisher) -> None:
    go_online(sessions, "pc-01")
    body = TaskCreate(device_id="pc-01", type="ping")
    first = create(sessions, publisher, body, "old")
    with sessions() as session:
        row = session.get(IdempotencyKey, ("POST /api/v1/tasks", "old"))
        assert row is not None
        row.expires_at = utcnow() - timedelta(seconds=1)
        session.commit()
    later = create(sessions, publisher, body, "old")
    assert not later.replayed and later.body["id"] != first.body["id"], "an expired key is a new request"
    with sessions() as session:
        session.get_one(IdempotencyKey, ("POST /api/v1/tasks", "old")).expires_at = utcnow() - timedelta(seconds=1)
        session.commit()
    with sessions() as session:
        assert idempotency.prune(session, utcnow()) == 1
        assert idempotency.prune(session, utcnow()) == 0
        assert session.scalar(select(func.count()).select_from(IdempotencyKey)) == 0


def check_lost_key_race(sessions: sessionmaker[Session], publisher: FakePublisher, monkeypatch: pytest.MonkeyPatch) -> None:
    """The loser of the race for a key (it looked before the winner committed, then wrote its
    own task and key) rolls its task back and answers the winner's answer."""
    go_online(sessions, "pc-01")
    body = TaskCreate(device_id="pc-01", type="echo", params={"message": "race"})
    winner = create(sessions, publisher, body, "race")
    real = idempotency.recorded
    looks: list[int] = []

    def late(session: Session, claim: Claim, now: Any) -> Answer | None:
        looks.append(1)
        return None if len(looks) == 1 else real(session, claim, now)  # the first look came too early

    monkeypatch.setattr(idempotency, "recorded", late)
    loser = create(sessions, publisher, body, "race")
    assert loser.replayed and loser.body == winner.body and len(looks) == 2
    assert count_tasks(sessions) == 1 and len(publisher.sent) == 1, "the loser's own task was rolled back, unsent"


def check_lost_id_race(sessions: sessionmaker[Session], publisher: FakePublisher, monkeypatch: pytest.MonkeyPatch) -> None:
    go_online(sessions, "pc-01")
    body = TaskCreate(id="race-id", device_id="pc-01", type="ping")
    winner = create(sessions, publisher, body, None)
    real: Callable[..., list[Task] | None] = task_create.existing_tasks
    looks: list[int] = []

    def late(session: Session, bodies: Any) -> list[Task] | None:
        looks.append(1)
        return None if len(looks) == 1 else real(session, bodies)

    monkeypatch.setattr(task_create, "existing_tasks", late)
    loser = create(sessions, publisher, body, None)
    assert loser.replayed and loser.body["id"] == winner.body["id"] == "race-id" and count_tasks(sessions) == 1


CHECKS: list[Callable[..., None]] = [
    check_same_key_same_body_replays, check_same_key_other_body_is_refused, check_client_id, check_batch,
    check_broadcast, check_expired_keys_are_new_and_pruned, check_lost_key_race, check_lost_id_race,
]


@pytest.mark.parametrize("check", CHECKS, ids=lambda check: check.__name__)
def test_on_sqlite(check: Callable[..., None], sessions: sessionmaker[Session], publisher: FakePublisher,
                   monkeypatch: pytest.MonkeyPatch) -> None:
    if "race" in check.__name__:
        check(sessions, publisher, monkeypatch)
    else:
        check(sessions, publisher)


def test_fingerprint_ignores_spelling_not_values() -> None:
    spelled = TaskCreate.model_validate_json('{"type":"ping","device_id":"pc-01","params":{}}')
    short = TaskCreate(device_id="pc-01", type="ping")
    assert idempotency.fingerprint("t", spelled) == idempotency.fingerprint("t", short)
    assert idempotency.fingerprint("t", short) != idempotency.fingerprint("t", short.model_copy(update={"ttl": 5.0}))
    assert idempotency.fingerprint("a", short) != idempotency.fingerprint("b", short)
