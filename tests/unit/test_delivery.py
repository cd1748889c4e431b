"""Delivery whatever the broker drops (docs/architecture.md#promise-8-the-promises-hold-at-fleet-size):
the ack bookkeeping (a task is dispatched only once the broker acked its message, and an ack
never moves a task back), the sweeper's re-send of tasks with no news past their deadline, and
the device answering a repeated id of a task still in progress with where it stands."""

from __future__ import annotations

import asyncio
import threading
from datetime import timedelta
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from controller.acks import AckTracker
from controller.ingest import Acked, Incoming, IngestWriter
from controller.models import Task
from controller.services import devices, sweeper, task_create, tasks
from device.executor import Executor
from device.handlers.registry import load_registry
from device.intake import TaskRequest, read_task
from device.journal import Journal, journal_path
from device.reporter import Reporter
from schemas.api import TaskCreate
from schemas.common import utcnow
from schemas.events import EventKind, TaskEvent
from schemas.status import DeviceFacts
from tests.services_kit import FakePublisher, event, go_online, will

RESEND_AFTER = 30.0


# ---- the ack bookkeeping -------------------------------------------------------------------------


def test_ack_tracker_hands_each_acked_publish_its_task_ids_once() -> None:
    acks = AckTracker()
    assert acks.sent(1, ["a", "b"]) == ()
    assert acks.sent(2, []) == ()  # a cancel: no task, still registered
    assert acks.in_flight == 2
    assert acks.acked(1) == ("a", "b")
    assert acks.acked(1) == (), "a PUBACK repeated (after a reconnect) records nothing twice"
    assert acks.acked(2) == ()
    # paho may call on_publish before publish() returned the mid to the controller
    assert acks.acked(3) == ()
    assert acks.sent(3, ["c"]) == ("c",), "an ack that came first is handed to the publisher"
    assert acks.sent(3, ["d"]) == (), "and only once: the mid's next use waits for its own ack"
    assert acks.acked(3) == ("d",) and acks.in_flight == 0


def test_ack_tracker_loses_no_ack_under_racing_threads() -> None:
    acks, recorded, lock = AckTracker(), [], threading.Lock()

    def record(ids: tuple[str, ...]) -> None:
        with lock:
            recorded.extend(ids)

    def network() -> None:
        for mid in range(1, 5001):
            record(acks.acked(mid))

    thread = threading.Thread(target=network)
    thread.start()
    for mid in range(1, 5001):
        record(acks.sent(mid, [f"t{mid}"]))
    thread.join()
    assert sorted(recorded) == sorted(f"t{mid}" for mid in range(1, 5001))


def _write(sessions: sessionmaker[Session], *items: Incoming) -> None:
    IngestWriter(sessions, lambda _device: None).write(list(items))


def test_a_task_is_dispatched_when_its_ack_is_recorded_and_never_moved_back(
    sessions: sessionmaker[Session], publisher: FakePublisher
) -> None:
    go_online(sessions, "pc-01")
    with sessions() as session:
        first = task_create.create_task(session, TaskCreate(device_id="pc-01", type="ping"), publisher).id
        fast = task_create.create_task(session, TaskCreate(device_id="pc-01", type="ping"), publisher).id
        slow_ack = task_create.create_task(session, TaskCreate(device_id="pc-01", type="ping"), publisher).id
    assert {tasks_status(sessions, t) for t in (first, fast, slow_ack)} == {"queued"}, "the POST never waits for the ack"
    # one batch: the device's `accepted` of `fast` arrived before the broker's ack was recorded
    _write(sessions, Incoming("pc-01", event(fast, "pc-01", EventKind.ACCEPTED, 0)), Incoming("", Acked((first, fast))))
    # another: `slow_ack` finished, its ack is recorded afterwards, twice (a resend)
    _write(sessions, Incoming("pc-01", event(slow_ack, "pc-01", EventKind.SUCCEEDED, 0)))
    _write(sessions, Incoming("", Acked((slow_ack, slow_ack))))
    with sessions() as session:
        rows = {t: session.get(Task, t) for t in (first, fast, slow_ack)}
        got = {t: (row.status, row.dispatch_count) for t, row in rows.items() if row is not None}
    assert got == {first: ("dispatched", 1), fast: ("accepted", 1), slow_ack: ("succeeded", 2)}


def tasks_status(sessions: sessionmaker[Session], task_id: str) -> str:
    with sessions() as session:
        task = session.get(Task, task_id)
        assert task is not None
        return task.status


# ---- the re-send sweep ---------------------------------------------------------------------------


def _resend(sessions: sessionmaker[Session], publisher: FakePublisher, seconds_from_now: float) -> list[str]:
    publisher.clear()
    with sessions() as session:
        sweeper.resend_unheard(session, publisher, utcnow() + timedelta(seconds=seconds_from_now), RESEND_AFTER)
    return [envelope.id or "" for _topic, envelope in publisher.sent]


def test_a_task_with_no_news_past_the_deadline_is_sent_again_with_backoff(
    sessions: sessionmaker[Session], publisher: FakePublisher
) -> None:
    go_online(sessions, "pc-01")
    with sessions() as session:
        lost = task_create.create_task(session, TaskCreate(device_id="pc-01", type="sleep"), publisher).id
        never_acked = task_create.create_task(session, TaskCreate(device_id="pc-01", type="ping"), publisher).id
        done = task_create.create_task(session, TaskCreate(device_id="pc-01", type="ping"), publisher).id
    publisher.unacked.remove(never_acked)
    publisher.ack(sessions)
    with sessions() as session:
        tasks.record_event(session, "pc-01", event(done, "pc-01", EventKind.SUCCEEDED, 0))
    assert _resend(sessions, publisher, RESEND_AFTER - 1) == [], "not before the deadline"
    assert _resend(sessions, publisher, RESEND_AFTER + 1) == [lost, never_acked], "dispatched and never-acked queued ones"
    with sessions() as session:
        resent = session.get(Task, lost)
        assert resent is not None and resent.resends == 1 and resent.status == "dispatched"
    assert _resend(sessions, publisher, RESEND_AFTER + 2) == [], "the next re-send waits twice as long"
    assert _resend(sessions, publisher, 3 * RESEND_AFTER + 2) == [lost, never_acked]
    assert _resend(sessions, publisher, 3 * RESEND_AFTER + 3) == []
    # the device answers the re-send with an event the controller already has: no news, backoff goes on
    with sessions() as session:
        tasks.record_event(session, "pc-01", event(lost, "pc-01", EventKind.STARTED, 0))
        tasks.record_event(session, "pc-01", event(lost, "pc-01", EventKind.STARTED, 0, replay=True))
        task = session.get(Task, lost)
        assert task is not None and (task.status, task.resends, task.resend_at) == ("running", 0, None), "news resets it"
    assert _resend(sessions, publisher, RESEND_AFTER - 1) == [], "news restarts the wait"
    assert _resend(sessions, publisher, RESEND_AFTER + 1) == [lost]


def test_a_duplicate_answer_does_not_reset_the_backoff(sessions: sessionmaker[Session], publisher: FakePublisher) -> None:
    go_online(sessions, "pc-01")
    with sessions() as session:
        task_id = task_create.create_task(session, TaskCreate(device_id="pc-01", type="sleep"), publisher).id
        tasks.record_event(session, "pc-01", event(task_id, "pc-01", EventKind.STARTED, 0))
    assert _resend(sessions, publisher, RESEND_AFTER + 1) == [task_id]
    with sessions() as session:
        tasks.record_event(session, "pc-01", event(task_id, "pc-01", EventKind.STARTED, 0, replay=True))
        task = session.get(Task, task_id)
        assert task is not None and task.resends == 1 and task.heard_at is not None
    assert _resend(sessions, publisher, 2 * RESEND_AFTER) == [], "a repeated event is no news"
    assert _resend(sessions, publisher, 3 * RESEND_AFTER + 5) == [task_id]


def test_no_resend_to_offline_devices_nor_of_final_or_unknown_tasks(
    sessions: sessionmaker[Session], publisher: FakePublisher
) -> None:
    go_online(sessions, "pc-01", "s1")
    go_online(sessions, "pc-02")
    with sessions() as session:
        offline = task_create.create_task(session, TaskCreate(device_id="pc-01", type="ping"), publisher).id
        devices.apply_status(session, "pc-01", will("pc-01", "s1"))
        failed = task_create.create_task(session, TaskCreate(device_id="pc-02", type="ping"), publisher).id
        tasks.record_event(session, "pc-02", event(failed, "pc-02", EventKind.FAILED, 0, error={"code": "x", "message": "m"}))
        # known only from a `started` whose `accepted` (with the task's summary) was lost
        tasks.record_event(session, "pc-02", event("pc-02-adhoc-1", "pc-02", EventKind.STARTED, 1))
    assert _resend(sessions, publisher, 10 * RESEND_AFTER) == [], f"{offline} waits for its device's birth"


def test_a_retry_starts_a_fresh_deadline(sessions: sessionmaker[Session], publisher: FakePublisher) -> None:
    go_online(sessions, "pc-01")
    with sessions() as session:
        task_id = task_create.create_task(session, TaskCreate(device_id="pc-01", type="ping", retries=1, retry_backoff=0), publisher).id
        tasks.record_event(session, "pc-01", event(task_id, "pc-01", EventKind.FAILED, 0, error={"code": "x", "message": "m"}))
        row = session.get(Task, task_id)
        assert row is not None
        row.heard_at = row.created_at = utcnow() - timedelta(hours=1)
        session.commit()
    publisher.clear()
    with sessions() as session:
        result = sweeper.sweep(session, publisher, timeout_grace=0, resend_after=RESEND_AFTER)
    assert (result.retried, result.resent, len(publisher.sent)) == (1, 0, 1), "the retried attempt was just sent"
    assert _resend(sessions, publisher, 1) == []
    assert _resend(sessions, publisher, RESEND_AFTER + 1) == [task_id]


# ---- the device side -----------------------------------------------------------------------------


def test_a_repeated_id_in_progress_is_answered_with_its_latest_event_and_runs_once(tmp_path: Path) -> None:
    registry = load_registry()
    journal = Journal(journal_path(tmp_path, "pc-01"))
    published: list[TaskEvent] = []
    reporter = Reporter(journal, "pc-01", lambda: "s-1", lambda raw: published.append(TaskEvent.model_validate_json(raw)))
    facts = DeviceFacts(name="pc-01", version="0", hostname="pc-01", os="Linux", python="3.11", keepalive=30)
    executor = Executor(journal=journal, reporter=reporter, device_id="pc-01", data_dir=tmp_path, facts=facts,
                        max_concurrency=1, registry=registry)
    payload = b'{"id": "job-1", "type": "append", "params": {"line": "x", "after": 0.3}}'
    request = read_task("devices/pc-01/tasks", payload, device_id="pc-01", registry=registry, max_payload_bytes=65536)
    assert isinstance(request, TaskRequest)

    async def scenario() -> None:
        executor.submit(request)
        while not any(e.event == EventKind.PROGRESS for e in published):
            await asyncio.sleep(0.01)
        before = len(published)
        executor.submit(request)  # the controller heard nothing and sent it again
        again = published[before:]
        assert len(again) == 1 and again[0].replay and again[0].event == EventKind.PROGRESS
        assert again[0].model_copy(update={"replay": False}) == published[before - 1], "the same event, same seq"
        while executor.active:
            await asyncio.sleep(0.01)

    try:
        asyncio.run(scenario())
        assert journal.execution_count("job-1") == 1
        assert (tmp_path / "appended-pc-01.log").read_text().count("job-1\t") == 1
        executor.submit(request)  # once final, the recorded outcome answers
        assert published[-1].event == EventKind.SUCCEEDED and published[-1].replay
    finally:
        journal.close()
