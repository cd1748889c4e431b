"""Turns a message received on a task topic into a runnable task, a cancel request or a rejection.

Checks run in a fixed order and the first failure decides the rejection code:
payload_too_large → invalid_json → invalid_task → (signed tasks only: unsigned →
unknown_signing_key → invalid_signature → wrong_target → stale_signature → replayed_nonce) →
unknown_type → invalid_params.
Error messages name fields and limits, never the values received (params may hold secrets).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from device.handlers.base import TaskHandler
from device.handlers.registry import HandlerRegistry
from device.journal import RunRef
from schemas import signing
from schemas.common import TASK_ID_PATTERN, TASK_TYPE_PATTERN, new_id
from schemas.errors import WireErrorCode
from schemas.events import TaskSummary
from schemas.json_shape import is_text, unusable_json
from schemas.tasks import CANCEL_TYPE, CONTROL_TYPES, CancelParams, InputParams, TaskEnvelope
from schemas.topics import device_tasks
from schemas.validation import describe_validation_error

INVALID_TYPE = "invalid"


@dataclass(frozen=True)
class TaskRequest:
    """A valid task for this device; `envelope.id` is the task id it runs under."""

    envelope: TaskEnvelope
    handler: TaskHandler[Any]
    params: BaseModel
    summary: TaskSummary

    @property
    def task_id(self) -> str:
        assert self.envelope.id is not None
        return self.envelope.id

    @property
    def run(self) -> RunRef:
        return RunRef(self.task_id, self.envelope.attempt)


@dataclass(frozen=True)
class CancelRequest:
    """Stop task `target_id` (a `cancel` message; handled by the daemon, reports nothing itself);
    with `attempt`, only that attempt of it."""

    target_id: str
    attempt: int | None = None


@dataclass(frozen=True)
class InputRequest:
    """Hand `value` to the running task `target_id`, which waits for `name` (an `input` message)."""

    target_id: str
    name: str
    value: str = field(repr=False)  # a verification code: kept out of reprs and logs


@dataclass(frozen=True)
class Rejection:
    task_id: str
    code: WireErrorCode
    message: str
    summary: TaskSummary

    @property
    def run(self) -> RunRef:
        return RunRef(self.task_id)


Intake = TaskRequest | CancelRequest | InputRequest | Rejection


NonceCheck = Callable[[str], bool]  # records a nonce; False when it was seen before


def read_task(
    topic: str,
    payload: bytes,
    *,
    device_id: str,
    registry: HandlerRegistry,
    max_payload_bytes: int,
    trusted_keys: signing.TrustedKeys | None = None,
    remember_nonce: NonceCheck | None = None,
    retained: bool = False,
) -> Intake:
    """Validate `payload` received on the task topic `topic` (this device's own, broadcast or group).

    A task from a broadcast or group topic runs as `<id>:<device_id>` with `broadcast_id=<id>`.
    A hand-written task without an id gets a fresh id on the device's own topic; on a broadcast
    or group topic its id is derived from the message, so that every device names the broadcast
    alike (an identical message sent again is therefore the same broadcast: it is answered from
    the journal, not run again; change any field, e.g. `created_at`, or give an id to repeat it).
    A `retained` message (one the broker kept and replays on every subscription) is never run.
    """
    fan_out = topic != device_tasks(device_id)
    bare = TaskSummary(type=INVALID_TYPE, source_topic=topic)
    if len(payload) > max_payload_bytes:
        message = f"task message is {len(payload)} bytes; this device accepts at most {max_payload_bytes} bytes"
        return Rejection(new_id(), WireErrorCode.PAYLOAD_TOO_LARGE, message, bare)

    if retained:  # under a fresh id: the rejection must not touch a task the message may name
        message = (
            f"a retained message on {topic} is not run: task topics never carry retained messages, which would "
            f"run again on every reconnect; publish it without the retain flag, and clear it: mosquitto_pub -r -n -t {topic}"
        )
        return Rejection(new_id(), WireErrorCode.RETAINED_TASK, message, bare)
    data = _json_object(payload)
    if isinstance(data, str):
        return Rejection(new_id(), WireErrorCode.INVALID_JSON, data, bare)

    raw_id, raw_type = data.get("id"), data.get("type")
    unreadable = unusable_json(data, "task message")
    if unreadable is not None:  # its events could not be sent or read back: refuse it now
        return Rejection(_salvaged_id(raw_id, device_id, fan_out), WireErrorCode.INVALID_JSON, unreadable, bare)
    readable = TaskSummary(
        type=raw_type if isinstance(raw_type, str) and re.fullmatch(TASK_TYPE_PATTERN, raw_type) else INVALID_TYPE,
        source_topic=topic,
    )
    try:
        envelope = TaskEnvelope.model_validate(data)
    except ValidationError as exc:
        task_id, broadcast_id = new_id(), None
        if isinstance(raw_id, str) and re.fullmatch(TASK_ID_PATTERN, raw_id):
            run_id, run_broadcast_id = _run_id(raw_id, device_id, fan_out, None)
            if re.fullmatch(TASK_ID_PATTERN, run_id):
                task_id, broadcast_id = run_id, run_broadcast_id
        summary = readable.model_copy(update={"broadcast_id": broadcast_id})
        return Rejection(task_id, WireErrorCode.INVALID_TASK, "invalid task: " + describe_validation_error(exc), summary)

    # Without an id every delivery is a new task; an operator who wants a broadcast grouped
    # and idempotent gives it an id.
    given_id = envelope.id or new_id()
    task_id, broadcast_id = _run_id(given_id, device_id, fan_out, envelope.broadcast_id)
    if not re.fullmatch(TASK_ID_PATTERN, task_id):
        message = f"invalid task: id: too long to name this device's run '<id>:{device_id}' (at most 128 characters)"
        return Rejection(new_id(), WireErrorCode.INVALID_TASK, message, readable)
    if trusted_keys:
        refusal = _signature_problem(envelope, trusted_keys, topic, remember_nonce)
        if refusal is not None:
            return Rejection(task_id, refusal[0], refusal[1], readable)
    envelope = envelope.model_copy(update={"id": task_id, "broadcast_id": broadcast_id})
    summary = TaskSummary(
        type=envelope.type,
        account=envelope.account,
        params=envelope.params,
        broadcast_id=broadcast_id,
        created_at=envelope.created_at,
        expires_at=envelope.expires_at,
        source_topic=topic,
    )

    if envelope.type in CONTROL_TYPES:
        return _control(envelope, task_id, summary, device_id, fan_out)

    handler = registry.get(envelope.type)
    if handler is None:
        supported = ", ".join([*registry.types(), *sorted(CONTROL_TYPES)])
        message = f"this device has no handler for task type {envelope.type!r}; it supports: {supported}"
        return Rejection(task_id, WireErrorCode.UNKNOWN_TYPE, message, summary)
    try:
        params = handler.params_model.model_validate(envelope.params)
    except ValidationError as exc:
        return Rejection(task_id, WireErrorCode.INVALID_PARAMS, "invalid params: " + describe_validation_error(exc, "params"), summary)
    return TaskRequest(envelope=envelope, handler=handler, params=params, summary=summary)


def _control(
    envelope: TaskEnvelope, task_id: str, summary: TaskSummary, device_id: str, fan_out: bool
) -> CancelRequest | InputRequest | Rejection:
    """A `cancel` or `input` message: the task it targets (on a broadcast topic, this device's
    run of that broadcast) and what to do with it."""
    model = CancelParams if envelope.type == CANCEL_TYPE else InputParams
    try:
        params = model.model_validate(envelope.params)
    except ValidationError as exc:
        return Rejection(task_id, WireErrorCode.INVALID_PARAMS, "invalid params: " + describe_validation_error(exc, "params"), summary)
    target = params.task_id
    if fan_out and not target.endswith(f":{device_id}"):
        target = f"{target}:{device_id}"
    if not re.fullmatch(TASK_ID_PATTERN, target):
        return Rejection(task_id, WireErrorCode.INVALID_PARAMS, "invalid params: params.task_id: too long", summary)
    if isinstance(params, InputParams):
        return InputRequest(target, params.name, params.value)
    return CancelRequest(target, params.attempt)


def _signature_problem(
    envelope: TaskEnvelope, trusted: signing.TrustedKeys, topic: str, remember_nonce: NonceCheck | None
) -> tuple[WireErrorCode, str] | None:
    """Signed tasks only: an unknown key, a bad or stale signature, or one made for another
    topic is refused; a nonce seen before is refused for a task without an id (with an id,
    the journal answers a repeat without running it)."""
    issue = signing.problem(envelope, trusted, topic)
    if issue is None and envelope.nonce and remember_nonce is not None:
        if not remember_nonce(envelope.nonce) and envelope.id is None:
            issue = (WireErrorCode.REPLAYED_NONCE, "this signed task was already received once; it is not run again")
    return issue


def _json_object(payload: bytes) -> dict[str, Any] | str:
    """The payload as a JSON object, or the reason it is not one."""
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"task message is not UTF-8 text (bad byte at offset {exc.start})"
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        return f"task message is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
    except RecursionError:
        return "task message is not valid JSON: nested too deeply"
    if not isinstance(data, dict):
        return f"task message must be a JSON object, got a JSON {_json_kind(data)}"
    return data


def _salvaged_id(raw_id: Any, device_id: str, fan_out: bool) -> str:
    """The run id of a message's `id` when that is a usable id (so the sender's task gets the
    rejection), else a fresh one."""
    if isinstance(raw_id, str) and is_text(raw_id) and re.fullmatch(TASK_ID_PATTERN, raw_id):
        run_id, _broadcast = _run_id(raw_id, device_id, fan_out, None)
        if re.fullmatch(TASK_ID_PATTERN, run_id):
            return run_id
    return new_id()


def _json_kind(value: Any) -> str:
    kinds = {list: "array", str: "string", bool: "boolean", int: "number", float: "number"}
    return "null" if value is None else kinds.get(type(value), type(value).__name__)


def _run_id(task_id: str, device_id: str, fan_out: bool, broadcast_id: str | None) -> tuple[str, str | None]:
    """(id this device runs the task under, its broadcast id)."""
    if not fan_out:
        return task_id, broadcast_id
    return f"{task_id}:{device_id}", task_id
