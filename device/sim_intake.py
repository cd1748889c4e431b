"""What a simulated device makes of a message on one of its task topics.

A lighter copy of `device/intake.py` for `fleet simulate` (no handler registry, no signatures):
the same run ids (a broadcast or group task runs as `<id>:<device id>` with `broadcast_id`),
the same rejection codes for a retained, oversized, unreadable or invalid message and for an
unknown type or bad params, and `cancel` control messages. Simulated devices know the
diagnostic types only (`SIMULATED_TYPES`) and never verify signatures.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from pydantic import BaseModel, ValidationError

from schemas.common import new_id
from schemas.errors import WireErrorCode
from schemas.events import TaskSummary
from schemas.tasks import CANCEL_TYPE, CONTROL_TYPES, CancelParams, EchoParams, PingParams, SleepParams, TaskEnvelope
from schemas.validation import describe_validation_error

SIMULATED_TYPES: dict[str, type[BaseModel]] = {"echo": EchoParams, "ping": PingParams, "sleep": SleepParams}
INVALID_TYPE = "invalid"


@dataclass(frozen=True)
class SimTask:
    """A valid task: run it as `task_id` (attempt `envelope.attempt`)."""

    task_id: str
    envelope: TaskEnvelope
    params: BaseModel
    summary: TaskSummary


@dataclass(frozen=True)
class SimCancel:
    target_id: str
    attempt: int | None


@dataclass(frozen=True)
class SimReject:
    task_id: str
    code: WireErrorCode
    message: str
    summary: TaskSummary


SimIntake = SimTask | SimCancel | SimReject | None  # None: nothing to do (an `input` message)


def read_sim_task(topic: str, payload: bytes, *, device_id: str, own_topic: str, retained: bool,
                  max_payload_bytes: int) -> SimIntake:
    """Validate a task message the way the daemon does (first failure decides the code)."""
    bare = TaskSummary(type=INVALID_TYPE, source_topic=topic)
    if len(payload) > max_payload_bytes:
        message = f"task message is {len(payload)} bytes; this device accepts at most {max_payload_bytes} bytes"
        return SimReject(new_id(), WireErrorCode.PAYLOAD_TOO_LARGE, message, bare)
    if retained:
        message = f"a retained message on {topic} is not run: publish it without the retain flag, and clear it"
        return SimReject(new_id(), WireErrorCode.RETAINED_TASK, message, bare)
    try:
        data = json.loads(payload)
    except (ValueError, RecursionError):
        return SimReject(new_id(), WireErrorCode.INVALID_JSON, "task message is not valid JSON", bare)
    if not isinstance(data, dict):
        return SimReject(new_id(), WireErrorCode.INVALID_JSON, "task message must be a JSON object", bare)
    try:
        envelope = TaskEnvelope.model_validate(data)
    except ValidationError as exc:
        return SimReject(new_id(), WireErrorCode.INVALID_TASK, "invalid task: " + describe_validation_error(exc), bare)
    fan_out = topic != own_topic
    given = envelope.id or new_id()
    task_id, broadcast_id = (f"{given}:{device_id}", given) if fan_out else (given, envelope.broadcast_id)
    envelope = envelope.model_copy(update={"id": task_id, "broadcast_id": broadcast_id})
    summary = TaskSummary(type=envelope.type, account=envelope.account, params=envelope.params,
                          broadcast_id=broadcast_id, created_at=envelope.created_at,
                          expires_at=envelope.expires_at, source_topic=topic)
    if envelope.type in CONTROL_TYPES:
        if envelope.type != CANCEL_TYPE or fan_out:
            return None
        try:
            cancel = CancelParams.model_validate(envelope.params)
        except ValidationError:
            return None
        return SimCancel(cancel.task_id, cancel.attempt)
    model = SIMULATED_TYPES.get(envelope.type)
    if model is None:
        supported = ", ".join([*sorted(SIMULATED_TYPES), *sorted(CONTROL_TYPES)])
        message = f"this device has no handler for task type {envelope.type!r}; it supports: {supported}"
        return SimReject(task_id, WireErrorCode.UNKNOWN_TYPE, message, summary)
    try:
        params = model.model_validate(envelope.params)
    except ValidationError as exc:
        message = f"invalid params for {envelope.type}: {describe_validation_error(exc)}"
        return SimReject(task_id, WireErrorCode.INVALID_PARAMS, message, summary)
    return SimTask(task_id, envelope, params, summary)
