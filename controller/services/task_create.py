"""Creating tasks: a request's checks, its rows committed, then its messages published (one
task, or a batch of them in one transaction). Recording what devices report is `tasks`'s job.

SQL is the source of truth: a task is committed before it is published
(docs/architecture.md#promise-1-sql-is-the-source-of-truth), and it counts as dispatched only
once the broker acknowledged its message (`tasks.stage_acked`). A task whose device is offline
is published again on the device's next birth (docs/architecture.md#promise-3-offline-devices-get-their-tasks).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from config.settings_housekeeping import ANY_TYPE
from controller.models import Device, Task
from controller.services import accounts, idempotency, pacing, placement, task_defaults
from controller.services.devices import device_not_found
from controller.services.errors import InvalidRequestError, PayloadTooLargeError, ServiceError
from controller.services.idempotency import Answer, Claim, Staged, TaskIdTakenError
from controller.services.publisher import Publisher
from controller.services.task_rows import new_task
from schemas.api import TaskBatchOut, TaskCreate, TaskOptions, TaskOut
from schemas.common import new_id, utcnow
from schemas.tasks import BUILTIN_PARAMS, TaskEnvelope
from schemas.topics import device_tasks
from schemas.validation import describe_validation_error

log = logging.getLogger(__name__)

ITEMS_NAMED = 10  # wrong items a refused batch names, so its error stays readable


class InvalidBatchError(InvalidRequestError):
    """Items of a batch that cannot be created; nothing of the batch was."""

    def __init__(self, problems: Sequence[tuple[int, ServiceError]], size: int) -> None:
        named = "; ".join(f"tasks[{index}]: {error.detail}" for index, error in problems[:ITEMS_NAMED])
        more = f"; and {len(problems) - ITEMS_NAMED} more" if len(problems) > ITEMS_NAMED else ""
        super().__init__(f"{len(problems)} of the {size} tasks are invalid, so none was created: {named}{more}")
        self.indexes = [index for index, _ in problems]


# ---- validation --------------------------------------------------------------------------


def check_params(task_type: str, params: dict[str, Any]) -> bool:
    """Validate `params` of a built-in task type; True when the type is built in.

    The error names the offending field but never echoes its value (params may hold secrets).
    """
    model = BUILTIN_PARAMS.get(task_type)
    if model is None:
        return False
    try:
        model.model_validate(params)
    except ValidationError as exc:
        problems = describe_validation_error(exc, "params")
        raise InvalidRequestError(f"invalid params for task type {task_type!r}: {problems}") from None
    return True


def supported_types(device: Device) -> list[str]:
    return list((device.facts or {}).get("task_types") or [])


MAX_RUN_AHEAD = timedelta(days=366)  # the latest run_at accepted


def requested_run_at(options: TaskOptions, now: datetime) -> datetime | None:
    """The run_at asked for, when it is still to come (one in the past means now)."""
    if options.run_at is None or options.run_at <= now:
        return None
    if options.run_at > now + MAX_RUN_AHEAD:
        raise InvalidRequestError("run_at is more than 366 days ahead; use a schedule (POST /api/v1/schedules) "
                                  "for work that far away")
    return options.run_at


def resolve_limits(options: TaskOptions, now: datetime, run_at: datetime | None = None) -> task_defaults.Limits:
    """(expires_at, timeout) of a requested task: the request's `ttl`/`expires_at` and `timeout`,
    else the defaults of its type (FLEET_TASK_DEFAULTS). A ttl, given or default, counts from
    `run_at` when there is one, else from now; an expiry before the task may run is refused."""
    if run_at is not None and options.expires_at is not None and options.expires_at <= run_at:
        raise InvalidRequestError(
            f"expires_at is not after the task's run_at ({run_at.isoformat(timespec='seconds')}, from run_at or "
            "pacing), so it could never run; give a later expires_at, or a ttl (counted from run_at)"
        )
    task_type = getattr(options, "type", None) or ANY_TYPE
    return task_defaults.resolve(task_type, run_at or now, ttl=options.ttl, expires_at=options.expires_at,
                                 timeout=options.timeout)


def resolve_expiry(options: TaskOptions, now: datetime, run_at: datetime | None = None) -> datetime:
    """`expires_at` alone of `resolve_limits`."""
    return resolve_limits(options, now, run_at).expires_at


def waiting(task: Task, now: datetime | None = None) -> bool:
    """Whether the task's run_at is still to come: it must not be published yet."""
    return task.run_at is not None and task.run_at > (now or utcnow())


# ---- envelopes and dispatch --------------------------------------------------------------


def envelope_for(task: Task) -> TaskEnvelope:
    """The message that tells the task's device to run it."""
    return TaskEnvelope(
        id=task.id,
        type=task.type,
        account=task.account,
        params=task.params,
        created_at=task.created_at,
        expires_at=task.expires_at,
        timeout=task.timeout,
        broadcast_id=task.broadcast_id,
        attempt=task.attempt,
    )


def check_size(envelope: TaskEnvelope, publisher: Publisher) -> None:
    """Refuse a task whose message would be larger than devices accept: every device would
    reject it, and a broker with a packet limit would drop the controller for sending it."""
    size = len(publisher.encode(envelope))
    if size > publisher.max_payload_bytes:
        raise PayloadTooLargeError(
            f"this task would be a {size:,}-byte MQTT message; devices accept at most {publisher.max_payload_bytes:,} "
            "bytes (FLEET_MAX_PAYLOAD_BYTES). Upload large content with POST /api/v1/files and refer to it in params."
        )


def publish_task(task: Task, publisher: Publisher, now: datetime | None = None) -> bool:
    """Publish a committed task to its device; it becomes dispatched when the broker acknowledges
    the message (never waited for here). False when not connected: the task stays queued, and
    is sent on the device's next birth or by the sweeper's re-send."""
    if waiting(task, now):
        return True  # the sweeping controller publishes it when its run_at comes (sweeper.release_due)
    accepted = _publish(task, publisher)
    if not accepted:
        log.warning("task %s stays queued: the MQTT client is not connected; it is sent on the device's next birth", task.id)
    return accepted


def _publish(task: Task, publisher: Publisher) -> bool:
    return publisher.publish(device_tasks(task.device_id), envelope_for(task), task_ids=(task.id,))


# ---- create ------------------------------------------------------------------------------


def _api_task(session: Session, body: TaskCreate, publisher: Publisher, now: datetime,
              loaded: Mapping[str, Device] | None = None) -> Task:
    """The row of a requested task, checked (device, type, params, expiry, size); not yet added.
    `loaded` holds devices read beforehand (a batch's): the rest are read here."""
    if body.placement is not None:
        device_id = placement.choose_device(session, body.placement, body.type, body.account, body.params,
                                            body.type in BUILTIN_PARAMS)
    else:
        device_id = accounts.route(session, body.device_id, body.account)
    device = loaded.get(device_id) if loaded else None
    device = device or session.get(Device, device_id)
    if device is None:
        raise device_not_found(device_id)
    if not check_params(body.type, body.params) and body.type not in supported_types(device):
        known = ", ".join(supported_types(device)) or "none reported yet"
        raise InvalidRequestError(
            f"task type {body.type!r} is not built in and device {device.id!r} does not support it; "
            f"built-in types: {', '.join(sorted(BUILTIN_PARAMS))}; types this device reports: {known}"
        )
    wanted = requested_run_at(body, now)
    limits = resolve_limits(body, now, wanted)
    task = new_task(
        id=body.id or new_id(),
        device_id=device.id,
        type=body.type,
        account=body.account,
        params=body.params,
        origin="api",
        created_at=now,
        expires_at=limits.expires_at,
        timeout=limits.timeout,
        max_retries=body.retries,
        retry_backoff=body.retry_backoff,
        run_at=wanted,
    )
    if body.id is not None:
        task.request_sha256 = idempotency.fingerprint("task", body)
    check_size(envelope_for(task), publisher)
    _pace(session, task, body, now)
    return task


def _pace(session: Session, task: Task, body: TaskCreate, now: datetime) -> None:
    """Move the task's run_at later when a pacing rule of its account and type says so (last, as
    it takes the account's slot in this transaction)."""
    paced = pacing.paced_run_at(session, body.account, body.type, task.run_at or now, now)
    if paced is None or paced <= (task.run_at or now):
        return
    task.run_at = paced
    task.expires_at = resolve_expiry(body, now, paced)


def stage_task(session: Session, body: TaskCreate, publisher: Publisher, task_id: str) -> Task:
    """Add (and flush) the task of `body` under `task_id` in the caller's transaction, checked as
    a REST create checks it (a schedule's firing: docs/architecture.md#schedules). Publish it with
    `publish_task` once committed."""
    task = _api_task(session, body.model_copy(update={"id": task_id}), publisher, utcnow())
    session.add(task)
    session.flush()
    return task


def task_answer(task: Task, replayed: bool = False) -> Answer:
    """A create's answer: 201 and the task as `TaskOut`."""
    return Answer(201, TaskOut.model_validate(task).model_dump(mode="json"), replayed)


def _taken(ids: Sequence[str]) -> TaskIdTakenError:
    named = ", ".join(repr(i) for i in ids[:ITEMS_NAMED]) + (f" and {len(ids) - ITEMS_NAMED} more" if len(ids) > ITEMS_NAMED else "")
    return TaskIdTakenError(
        f"task id {named} is already used by a task created by another request (other params, device or options); "
        "choose another id, or leave id out to get a random one"
    )


def existing_tasks(session: Session, bodies: Sequence[TaskCreate]) -> list[Task] | None:
    """The tasks a repeated request created before, found by their client-chosen ids: None when
    none of them exists; `TaskIdTakenError` when an id is held by a task another request created."""
    wanted = [body.id for body in bodies if body.id is not None]
    if not wanted:
        return None
    found = {task.id: task for task in session.scalars(select(Task).where(Task.id.in_(wanted)))}
    if not found:
        return None
    taken = [body.id for body in bodies if body.id in found
             and found[body.id].request_sha256 != idempotency.fingerprint("task", body)]
    if taken or len(found) != len(bodies):
        raise _taken(taken or list(found))
    return [found[body.id] for body in bodies if body.id is not None]


def create_task(session: Session, body: TaskCreate, publisher: Publisher) -> Task:
    """Commit a new task for one device (the given one, or its account's), then publish it (it
    becomes dispatched when the broker acknowledges it)."""
    task = _api_task(session, body, publisher, utcnow())
    session.add(task)
    session.commit()
    log.info("task %s (%s) created for device %s", task.id, task.type, task.device_id)
    publish_task(task, publisher)
    return task  # as committed: no read after the publish (it becomes dispatched on the broker's ack)


def create_task_once(session: Session, body: TaskCreate, publisher: Publisher, claim: Claim | None, ttl: float) -> Answer:
    """`create_task` that creates nothing new for a repeated request: one with the same
    `Idempotency-Key` (`claim`) or the same client-chosen `id` answers what the first got."""

    def stage() -> Staged | Answer:
        existing = existing_tasks(session, [body])
        if existing:
            return task_answer(existing[0], replayed=True)
        task = _api_task(session, body, publisher, utcnow())
        session.add(task)
        session.flush()

        def committed() -> None:
            log.info("task %s (%s) created for device %s", task.id, task.type, task.device_id)
            publish_task(task, publisher)

        return task_answer(task), committed

    def on_conflict() -> Answer | None:
        existing = existing_tasks(session, [body])
        return task_answer(existing[0], replayed=True) if existing else None

    return idempotency.create_once(session, claim, ttl, stage, on_conflict)


def _batch_rows(session: Session, bodies: Sequence[TaskCreate], publisher: Publisher) -> list[Task]:
    """Every item checked as a single create checks it; `InvalidBatchError` names the wrong ones."""
    targets = {body.device_id for body in bodies if body.device_id is not None}
    loaded = {device.id: device for device in session.scalars(select(Device).where(Device.id.in_(targets)))}
    now = utcnow()
    created: list[Task] = []
    problems: list[tuple[int, ServiceError]] = []
    first: dict[str, int] = {}
    for index, body in enumerate(bodies):
        if body.id is not None and first.setdefault(body.id, index) != index:
            problems.append((index, InvalidRequestError(f"its id {body.id!r} is also tasks[{first[body.id]}]'s")))
            continue
        try:
            created.append(_api_task(session, body, publisher, now, loaded))
        except ServiceError as exc:
            problems.append((index, exc))
    if problems:
        raise InvalidBatchError(problems, len(bodies))
    return created


def _publish_batch(created: Sequence[Task], publisher: Publisher) -> None:
    now = utcnow()
    unsent = sum(not _publish(task, publisher) for task in created if not waiting(task, now))
    if unsent:
        log.warning("%d tasks of the batch stay queued: the MQTT client is not connected; each is sent on its "
                    "device's next birth", unsent)


def create_tasks(session: Session, bodies: Sequence[TaskCreate], publisher: Publisher) -> list[Task]:
    """`create_task` for many tasks at once: every item is checked as a single create checks it,
    then all are committed in one transaction and published, in order. One wrong item refuses
    the whole batch (`InvalidBatchError` names every wrong item) and nothing is created."""
    created = _batch_rows(session, bodies, publisher)
    session.bulk_save_objects(created)
    session.commit()
    log.info("%d tasks created in one batch (%s … %s)", len(created), created[0].id, created[-1].id)
    _publish_batch(created, publisher)
    return created


def batch_answer(tasks: Sequence[Task], replayed: bool = False) -> Answer:
    body = TaskBatchOut(items=[TaskOut.model_validate(task) for task in tasks]).model_dump(mode="json")
    return Answer(201, body, replayed)


def create_tasks_once(
    session: Session, bodies: Sequence[TaskCreate], publisher: Publisher, claim: Claim | None, ttl: float
) -> Answer:
    """`create_tasks` that creates nothing new for a repeated request (see `create_task_once`):
    a batch whose every item names an id of a task that request created answers those tasks."""

    def stage() -> Staged | Answer:
        existing = existing_tasks(session, bodies)
        if existing:
            return batch_answer(existing, replayed=True)
        created = _batch_rows(session, bodies, publisher)
        session.bulk_save_objects(created)
        session.flush()

        def committed() -> None:
            log.info("%d tasks created in one batch (%s … %s)", len(created), created[0].id, created[-1].id)
            _publish_batch(created, publisher)

        return batch_answer(created), committed

    def on_conflict() -> Answer | None:
        existing = existing_tasks(session, bodies)
        return batch_answer(existing, replayed=True) if existing else None

    return idempotency.create_once(session, claim, ttl, stage, on_conflict)
