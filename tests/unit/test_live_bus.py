"""The push stream's bus (controller.live) and what feeds it (controller.live_feed), on a real
SQLite database: filters, the drop policy for slow readers, publishing from other threads, and
events only after a commit."""

from __future__ import annotations

import asyncio
import threading

import pytest
from sqlalchemy.orm import Session, sessionmaker

from controller.ingest import Acked, IngestWriter
from controller.live import LiveBus, StreamFilter
from controller.live_feed import IngestFeed, watch_sessions
from controller.services import task_control, task_create
from schemas.api import TaskCreate
from schemas.events import EventKind
from schemas.live import Dropped, LiveEvent, PresenceChange, TaskChange, TaskEventNotice
from tests.services_kit import FakePublisher, birth, event, go_online, will


def presence(device_id: str, status: str = "online") -> PresenceChange:
    return PresenceChange(device_id=device_id, status=status)  # type: ignore[arg-type]


async def drain(subscription: object, timeout: float = 0.2) -> list[LiveEvent]:
    """Everything a subscription has now (waits `timeout` for the first late one)."""
    out: list[LiveEvent] = []
    while True:
        try:
            item = await asyncio.wait_for(subscription.next(), timeout)  # type: ignore[attr-defined]
        except TimeoutError:
            return out
        if item is None:
            return out
        out.append(item)


def test_filters_pick_kinds_devices_and_tasks() -> None:
    async def run() -> None:
        bus = LiveBus()
        everything = bus.subscribe(StreamFilter())
        one_device = bus.subscribe(StreamFilter(devices=frozenset({"pc-01"})))
        tasks_only = bus.subscribe(StreamFilter(kinds=frozenset({"task"}), tasks=frozenset({"t1"})))
        change = TaskChange(task_id="t1", device_id="pc-02", type="echo", status="running")
        bus.publish([presence("pc-01"), presence("pc-02"), change])
        assert len(await drain(everything)) == 3
        assert [e.device_id for e in await drain(one_device)] == ["pc-01"]  # type: ignore[union-attr]
        assert await drain(tasks_only) == [change]

    asyncio.run(run())


def test_a_slow_reader_loses_events_not_the_producer_and_is_told_how_many() -> None:
    async def run() -> None:
        bus = LiveBus(queue_size=10)
        slow = bus.subscribe(StreamFilter())
        fast = bus.subscribe(StreamFilter())
        for index in range(25):  # the producer never waits, whatever the readers do
            bus.publish([presence(f"pc-{index:02d}")])
        got_fast = []
        for _ in range(10):
            got_fast.append(await fast.next())
        # the slow reader gets the first 10, then one notice of the 15 it missed, then new ones
        got = await drain(slow)
        assert [e.device_id for e in got[:10]] == [f"pc-{i:02d}" for i in range(10)]  # type: ignore[union-attr]
        assert isinstance(got[10], Dropped) and got[10].count == 15 and len(got) == 11
        bus.publish([presence("pc-99")])
        assert [e.device_id for e in await drain(slow)] == ["pc-99"]  # type: ignore[union-attr]
        assert len(got_fast) == 10

    asyncio.run(run())


def test_publish_from_another_thread_reaches_the_loop() -> None:
    async def run() -> None:
        bus = LiveBus()
        subscription = bus.subscribe(StreamFilter())
        thread = threading.Thread(target=lambda: bus.publish([presence("pc-07")]))
        thread.start()
        thread.join()
        first = await asyncio.wait_for(subscription.next(), 5)
        assert isinstance(first, PresenceChange) and first.device_id == "pc-07"

    asyncio.run(run())


def test_close_ends_every_subscription_and_nobody_listening_costs_nothing() -> None:
    async def run() -> None:
        bus = LiveBus()
        bus.publish([presence("pc-01")])  # no subscriber: dropped at once, not counted
        assert bus.published == 0
        subscription = bus.subscribe(StreamFilter())
        waiting = asyncio.ensure_future(subscription.next())
        await asyncio.sleep(0)
        bus.close()
        assert await asyncio.wait_for(waiting, 5) is None
        assert not bus.has_subscribers

    asyncio.run(run())


def test_orm_writes_are_published_after_commit_only(sessions: sessionmaker[Session], publisher: FakePublisher) -> None:
    go_online(sessions, "pc-01")
    bus = LiveBus()
    watch_sessions(sessions, bus)
    seen: list[LiveEvent] = []

    async def run() -> None:
        subscription = bus.subscribe(StreamFilter())

        def work() -> None:
            with sessions() as session:
                task = task_create.create_task(session, TaskCreate(device_id="pc-01", type="sleep"), publisher)
            with sessions() as session:  # a write rolled back publishes nothing
                session.add(task_create_row(session, task.id))
                session.flush()
                session.rollback()
            with sessions() as session:
                task_control.cancel_task(session, task.id, publisher)

        await asyncio.to_thread(work)
        seen.extend(await drain(subscription))

    asyncio.run(run())
    kinds = [(e.kind, getattr(e, "status", None) or getattr(e, "event", None)) for e in seen]
    assert kinds[0] == ("task", "queued"), kinds  # the rolled-back progress never shows
    assert sorted(kinds[1:]) == [("task", "canceled"), ("task_event", "canceled")], kinds
    assert {getattr(e, "device_id", None) for e in seen} == {"pc-01"}


def task_create_row(session: Session, task_id: str) -> object:
    from controller.models import Task

    task = session.get(Task, task_id)
    assert task is not None
    task.progress = 50
    return task


def test_ingest_batches_are_published_with_the_state_they_left(sessions: sessionmaker[Session], publisher: FakePublisher) -> None:
    go_online(sessions, "pc-01")
    with sessions() as session:
        task = task_create.create_task(session, TaskCreate(device_id="pc-01", type="sleep"), publisher)
    bus = LiveBus()
    feed = IngestFeed(sessions, bus)
    writer = IngestWriter(sessions, lambda _ids: None, committed=feed)
    seen: list[LiveEvent] = []

    async def run() -> None:
        subscription = bus.subscribe(StreamFilter())

        def work() -> None:
            from controller.ingest import Incoming

            writer.write([
                Incoming("pc-01", Acked((task.id,))),
                Incoming("pc-01", event(task.id, "pc-01", EventKind.ACCEPTED, 1)),
                Incoming("pc-01", event(task.id, "pc-01", EventKind.PROGRESS, 2, progress=40, details={"qr": "x"})),
                Incoming("pc-02", birth("pc-02", "s2")),
                Incoming("pc-01", will("pc-01", "s1")),
            ])

        await asyncio.to_thread(work)
        seen.extend(await drain(subscription))

    asyncio.run(run())
    notices = [e for e in seen if isinstance(e, TaskEventNotice)]
    assert [(n.event, n.progress, n.details) for n in notices] == [
        (EventKind.ACCEPTED, None, None), (EventKind.PROGRESS, 40, {"qr": "x"})]
    [change] = [e for e in seen if isinstance(e, TaskChange)]
    assert (change.task_id, change.status, change.progress) == (task.id, "running", 40)
    assert sorted((e.device_id, e.status) for e in seen if isinstance(e, PresenceChange)) == [
        ("pc-01", "offline"), ("pc-02", "online")]


@pytest.mark.parametrize("kinds", [frozenset({"presence"})])
def test_hello_and_dropped_pass_any_filter(kinds: frozenset[str]) -> None:
    stream_filter = StreamFilter(kinds=kinds, devices=frozenset({"nobody"}))
    assert stream_filter.matches(Dropped(count=3))
    assert not stream_filter.matches(presence("pc-01"))
