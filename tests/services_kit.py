"""Builders for the controller-services tests: an in-memory stand-in for the MQTT publish side
(the database is always real) and the status and event messages devices send."""

from __future__ import annotations

import socket
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel
from sqlalchemy.orm import Session, sessionmaker

from controller.models import Device
from controller.services import devices, tasks
from schemas.common import utcnow
from schemas.events import EventKind, TaskEvent
from schemas.status import DeviceFacts, DeviceStatus
from schemas.tasks import TaskEnvelope

ADMIN_TOKEN = "test-admin-token-0123456789abcdef"


def unused_port() -> int:
    """A TCP port nothing listens on (for a broker that must not exist)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class FakePublisher:
    """Records what the services publish; stands in for the MQTT client only. The broker's
    acks come when the test says so (`ack`), as they come later than the publish in life."""

    max_payload_bytes = 4096

    def __init__(self) -> None:
        self.sent: list[tuple[str, TaskEnvelope]] = []
        self.unacked: list[str] = []  # task ids of accepted publishes the broker has not acked yet
        self.accepting = True
        self.retained: dict[str, BaseModel] = {}  # topic → the latest retained message

    def encode(self, model: BaseModel) -> bytes:
        return model.model_dump_json(exclude_none=True).encode()

    def publish(self, topic: str, model: BaseModel, task_ids: Sequence[str] = ()) -> bool:
        assert isinstance(model, TaskEnvelope)
        if self.accepting:
            self.sent.append((topic, model))
            self.unacked.extend(task_ids)
        return self.accepting

    def publish_retained(self, topic: str, model: BaseModel) -> bool:
        if self.accepting:
            self.retained[topic] = model
        return self.accepting

    def ack(self, sessions: sessionmaker[Session]) -> list[str]:
        """The broker acknowledges every accepted publish: record it as the ingest writer does."""
        acked, self.unacked = self.unacked, []
        with sessions() as session:
            tasks.mark_dispatched(session, acked)
        return acked

    def clear(self) -> None:
        self.sent.clear()


def birth(
    device_id: str, session_id: str, *, groups: list[str] | None = None, task_types: list[str] | None = None
) -> DeviceStatus:
    facts = DeviceFacts(
        name=f"PC {device_id}",
        version="0.1.0",
        hostname=device_id,
        os="Linux",
        python="3.11",
        task_types=task_types or ["ping", "echo", "sleep"],
        groups=groups or [],
        keepalive=30,
    )
    return DeviceStatus(device_id=device_id, state="online", session_id=session_id, at=utcnow(), facts=facts)


def will(device_id: str, session_id: str) -> DeviceStatus:
    return DeviceStatus(device_id=device_id, state="offline", session_id=session_id, reason="connection lost")


def event(task_id: str, device_id: str, kind: EventKind, seq: int, **fields: Any) -> TaskEvent:
    return TaskEvent(task_id=task_id, device_id=device_id, event=kind, seq=seq, at=utcnow(), session_id="s1", **fields)


def go_online(sessions: sessionmaker[Session], device_id: str, session_id: str = "s1", **facts: Any) -> bool:
    """A birth; groups it declares are also made its membership, as an operator would (the
    controller counts only the groups it set: services/groups.py)."""
    with sessions() as session:
        born = devices.apply_status(session, device_id, birth(device_id, session_id, **facts))
    if facts.get("groups"):
        with sessions() as session:
            device = session.get(Device, device_id)
            assert device is not None
            device.groups = sorted(set(device.groups or []) | set(facts["groups"]))
            session.commit()
    return born


def status_of(sessions: sessionmaker[Session], task_id: str) -> str:
    with sessions() as session:
        return tasks.get_task(session, task_id).status
