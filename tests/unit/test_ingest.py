"""The ingest writer (controller/ingest.py) on a real SQLite database: a burst of births,
heartbeats and task events queued as paho's thread would queue them, recorded in far fewer
transactions than messages, in order per device, and a message the database refuses loses
nothing but itself."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import Engine, event, select, text
from sqlalchemy.orm import Session, sessionmaker

from controller.ingest import RECONNECTED, Incoming, IngestWriter
from controller.models import Device, DeviceConnection, Task, TaskEventRecord
from controller.unborn import BIRTH_AFTER
from schemas.common import utcnow
from schemas.events import EventKind
from schemas.status import Heartbeat
from tests.services_kit import birth, will
from tests.services_kit import event as task_event

DEVICES = 20
TASKS_PER_DEVICE = 10
KINDS = (EventKind.ACCEPTED, EventKind.STARTED, EventKind.SUCCEEDED)


def _count_commits(engine: Engine) -> list[int]:
    commits = [0]

    def on_commit(_connection: object) -> None:
        commits[0] += 1

    event.listen(engine, "commit", on_commit)
    return commits


def _burst(poison: str | None = None) -> list[Incoming]:
    """Per device: its birth, then per task accepted/started/succeeded with a heartbeat between tasks."""
    items = [RECONNECTED]
    for d in range(DEVICES):
        device_id = f"pc-{d:02d}"
        items.append(Incoming(device_id, birth(device_id, "s1")))
        for t in range(TASKS_PER_DEVICE):
            task_id = poison if poison and (d, t) == (3, 4) else f"t-{d:02d}-{t:02d}"
            items.extend(Incoming(device_id, task_event(task_id, device_id, kind, seq)) for seq, kind in enumerate(KINDS))
            items.append(Incoming(device_id, Heartbeat(device_id=device_id, session_id="s1", at=utcnow(), running=0)))
    return items


def _run(sessions: sessionmaker[Session], items: list[Incoming]) -> list[str]:
    """Queue `items` as paho's thread does, then stop the writer (which drains the queue); the
    devices whose pending tasks were re-dispatched, in order."""
    redispatched: list[str] = []
    writer = IngestWriter(sessions, redispatched.extend, max_batch=500, max_wait=0.05)
    writer.start()
    for item in items:
        writer.put(item)
    writer.stop(timeout=60)
    stats = writer.stats()
    assert (stats.queue, stats.dropped, stats.messages) == (0, 0, len(items))
    assert stats.high_water >= 1
    return redispatched


def test_a_burst_is_recorded_in_few_transactions_in_order(engine: Engine, sessions: sessionmaker[Session]) -> None:
    commits = _count_commits(engine)
    items = _burst()
    redispatched = _run(sessions, items)
    print(f"{len(items)} messages recorded in {commits[0]} transactions")
    assert commits[0] * 20 <= len(items), "a transaction per batch, not per message"
    assert redispatched == [f"pc-{d:02d}" for d in range(DEVICES)], "each birth re-dispatches once, after commit"
    with sessions() as session:
        statuses = session.scalars(select(Task.status)).all()
        assert len(statuses) == DEVICES * TASKS_PER_DEVICE and set(statuses) == {"succeeded"}
        for task_id in ("t-00-00", "t-07-09", "t-19-05"):
            kinds = session.scalars(
                select(TaskEventRecord.event).where(TaskEventRecord.task_id == task_id).order_by(TaskEventRecord.id)
            ).all()
            assert kinds == [k.value for k in KINDS], f"{task_id}: events in arrival order"
        assert session.scalar(select(TaskEventRecord.applied).where(TaskEventRecord.applied.is_(False))) is None
        online = session.scalars(select(Device).where(Device.status == "online", Device.last_heartbeat.is_not(None)))
        assert len(online.all()) == DEVICES, "births recorded before the heartbeats of their session"


def test_a_poison_message_loses_only_itself(engine: Engine, sessions: sessionmaker[Session]) -> None:
    with engine.begin() as connection:  # the database itself refuses one task's events
        connection.execute(text(
            "CREATE TRIGGER poison BEFORE INSERT ON task_events WHEN NEW.task_id = 'poison' "
            "BEGIN SELECT RAISE(ABORT, 'poisoned event'); END"
        ))
    _run(sessions, _burst(poison="poison"))
    with sessions() as session:
        statuses = session.scalars(select(Task.status)).all()
        assert len(statuses) == DEVICES * TASKS_PER_DEVICE - 1 and set(statuses) == {"succeeded"}
        assert session.get(Task, "poison") is None
        assert session.get(Task, "t-03-05") is not None, "the poison's batch-mates were recorded"


def test_a_heartbeat_queued_before_a_will_does_not_revive_the_device(sessions: sessionmaker[Session]) -> None:
    beat = Heartbeat(device_id="pc-01", session_id="s1", at=utcnow(), running=0)
    _run(sessions, [Incoming("pc-01", birth("pc-01", "s1")), Incoming("pc-01", beat), Incoming("pc-01", will("pc-01", "s1"))])
    with sessions() as session:
        device = session.get(Device, "pc-01")
        assert device is not None and device.status == "offline" and device.last_heartbeat is not None


def test_a_session_that_keeps_heartbeating_without_its_birth_counts_as_born(sessions: sessionmaker[Session]) -> None:
    redispatched: list[str] = []
    writer = IngestWriter(sessions, redispatched.extend)
    writer.write([Incoming("pc-01", birth("pc-01", "s1")), Incoming("pc-01", will("pc-01", "s1"))])
    redispatched.clear()
    start = utcnow()

    def beat(n: int) -> None:  # the n-th heartbeat of session s2, whose birth was lost; written at once
        writer.put(Incoming("pc-01", Heartbeat(device_id="pc-01", session_id="s2", at=start + timedelta(seconds=n))))
        writer.write([], final=True)

    def device() -> Device:
        with sessions() as session:
            found = session.get(Device, "pc-01")
            assert found is not None
            return found

    for n in range(BIRTH_AFTER - 1):
        beat(n)
        writer.write([], final=True)  # the same heartbeat held and written again is not another one
        assert device().status == "offline" and redispatched == []
    beat(BIRTH_AFTER)
    found = device()
    assert (found.status, found.session_id, found.last_heartbeat is not None) == ("online", "s2", True)
    assert found.facts is not None and found.facts["name"] == "PC pc-01", "the facts of its last birth stay"
    assert redispatched == ["pc-01"], "its pending tasks are sent again, as on any birth"
    with sessions() as session:
        reasons = session.scalars(select(DeviceConnection.reason).order_by(DeviceConnection.id)).all()
    assert reasons[-1] is not None and "no birth" in reasons[-1]
    writer.write([Incoming("pc-01", birth("pc-01", "s2"))])  # the late birth: the same session, nothing re-sent
    assert device().status == "online" and redispatched == ["pc-01"]
