"""What the services need from MQTT: publishing a message (QoS 1, not retained; retained only for a
device's desired config), and its size."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from pydantic import BaseModel


class Publisher(Protocol):
    max_payload_bytes: int
    """The largest message devices accept (FLEET_MAX_PAYLOAD_BYTES)."""

    def encode(self, model: BaseModel) -> bytes:
        """`model` as it would be sent (signed for a task topic, where tasks are signed): its size."""
        ...

    def publish(self, topic: str, model: BaseModel, task_ids: Sequence[str] = ()) -> bool:
        """Send `model` as JSON on `topic`; True when the MQTT client accepted it for delivery.
        The tasks in `task_ids` become dispatched once the broker acknowledges the message."""
        ...

    def publish_retained(self, topic: str, model: BaseModel) -> bool:
        """Send `model` as JSON on `topic`, QoS 1 and retained (a device's desired config only:
        task topics never carry retained messages)."""
        ...
