"""The births of one ingest batch are followed up together: one read finds the devices with
unfinished tasks, and only those are re-dispatched (in creation order, as one birth would)."""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from controller.services import task_control, tasks
from schemas.api import TaskCreate
from schemas.events import EventKind
from tests.services_kit import FakePublisher, event, go_online


def test_births_of_a_batch_redispatch_only_devices_with_unfinished_tasks(sessions: sessionmaker[Session]) -> None:
    publisher = FakePublisher()
    born = [f"pc-{n:02d}" for n in range(6)]
    for device_id in born:
        go_online(sessions, device_id, "s1")
    with sessions() as session:
        first = tasks.create_task(session, TaskCreate(device_id="pc-03", type="ping"), publisher).id
        second = tasks.create_task(session, TaskCreate(device_id="pc-03", type="echo"), publisher).id
        done = tasks.create_task(session, TaskCreate(device_id="pc-05", type="ping"), publisher).id
        tasks.record_event(session, "pc-05", event(done, "pc-05", EventKind.SUCCEEDED, 0))
    publisher.clear()
    with sessions() as session:
        sent = task_control.redispatch_births(session, [*born, "pc-03"], publisher)  # a repeated id counts once
    assert sent == [first, second]
    assert [(topic, envelope.id) for topic, envelope in publisher.sent] == [
        ("devices/pc-03/tasks", first), ("devices/pc-03/tasks", second)]
    with sessions() as session:
        assert task_control.redispatch_births(session, [], publisher) == []
