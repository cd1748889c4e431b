"""The one thing the services need from MQTT: publishing a message (QoS 1, not retained)."""

from __future__ import annotations

from typing import Protocol

from pydantic import BaseModel


class Publisher(Protocol):
    def publish(self, topic: str, model: BaseModel) -> bool:
        """Send `model` as JSON on `topic`; True when the MQTT client accepted it for delivery."""
        ...
