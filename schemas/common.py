"""Building blocks shared by the wire and REST schemas: identifiers, timestamps, strict base model."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, StringConstraints

# A device id ends up inside MQTT topic names, file names and URLs, so it may not contain
# MQTT wildcards, '/', whitespace or anything a file system would choke on.
DEVICE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
# Task ids also appear in URLs; ':' is allowed because per-device runs of a broadcast are
# named "<broadcast id>:<device id>".
TASK_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
GROUP_PATTERN = DEVICE_ID_PATTERN
TASK_TYPE_PATTERN = r"^[a-z][a-z0-9_.-]{0,63}$"

DeviceId = Annotated[str, StringConstraints(pattern=DEVICE_ID_PATTERN)]
TaskId = Annotated[str, StringConstraints(pattern=TASK_ID_PATTERN)]
GroupName = Annotated[str, StringConstraints(pattern=GROUP_PATTERN)]
TaskType = Annotated[str, StringConstraints(pattern=TASK_TYPE_PATTERN)]


def _aware(value: datetime) -> datetime:
    """Treat a naive timestamp as UTC so comparisons never mix naive and aware values."""
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


UtcDatetime = Annotated[datetime, AfterValidator(_aware)]


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def new_id() -> str:
    """A fresh random id for tasks, broadcasts and sessions (32 hex characters)."""
    return uuid.uuid4().hex


class StrictModel(BaseModel):
    """Base of every wire/REST model: unknown fields are an error, not silently dropped."""

    model_config = ConfigDict(extra="forbid")
