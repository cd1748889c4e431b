"""Housekeeping routes (docs/architecture.md#housekeeping): bulk cancel, deleting and restoring a
device, and pruning old history now."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Request

from broker.connection import BrokerAddress
from controller.api.deps import PublisherDep, SessionDep, SettingsDep, write_turn
from controller.api.security import Admin, Operate
from controller.services import bulk_cancel, device_delete, retention
from schemas.api import DeviceOut, ErrorBody
from schemas.common import utcnow
from schemas.housekeeping import DeviceDeleted, PruneOut, PruneRequest, TaskCancelFilter, TaskCancelOut

router = APIRouter(tags=["housekeeping"])

NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorBody, "description": "unknown device"}}


@router.post("/tasks/cancel", dependencies=[Operate], summary="Cancel every unfinished task a filter names")
def cancel_tasks(request: Request, session: SessionDep, publisher: PublisherDep, body: TaskCancelFilter) -> TaskCancelOut:
    """Each task goes the way `POST /api/v1/tasks/{id}/cancel` sends it: one not started ends
    `canceled` at once, a running one is told to stop and reports `canceled` itself, a pending
    retry never runs. `dry_run` lists what would be canceled."""
    with write_turn(request, session):
        return bulk_cancel.cancel_matching(session, body, publisher)


@router.delete("/devices/{device_id}", dependencies=[Admin], summary="Delete a device",
               responses={**NOT_FOUND, 409: {"model": ErrorBody, "description": "the controller's own login"}})
def delete_device(request: Request, session: SessionDep, publisher: PublisherDep, settings: SettingsDep,
                  device_id: str, history: Literal["keep", "purge"] = "keep") -> DeviceDeleted:
    """Cancels its unfinished tasks, revokes its broker login (the broker refuses it from now
    on), clears its retained status, deletes the accounts bound to it, and keeps a tombstone so
    a birth of that id is ignored. `history=keep` leaves its tasks, events and presence history
    queryable; `history=purge` deletes them."""
    own = BrokerAddress.from_url(str(settings.mqtt_urls[0])).username
    with write_turn(request, session):
        return device_delete.delete_device(session, device_id, history, publisher, settings, own)


@router.post("/devices/{device_id}/restore", dependencies=[Admin], summary="Admit a deleted device again",
             responses=NOT_FOUND)
def restore_device(request: Request, session: SessionDep, device_id: str) -> DeviceOut:
    """Its next birth is recorded again; it needs a broker login first (`fleet device add`)."""
    with write_turn(request, session):
        return DeviceOut.model_validate(device_delete.restore_device(session, device_id))


@router.post("/prune", dependencies=[Admin], summary="Delete history past its retention now")
def prune(session: SessionDep, settings: SettingsDep, body: PruneRequest | None = None) -> PruneOut:
    """What the scheduled prune does every FLEET_PRUNE_INTERVAL: task events, presence history,
    finished tasks, alert deliveries and expired idempotency keys older than their
    FLEET_RETENTION_* setting, in batches. `dry_run` counts instead."""
    dry_run = body.dry_run if body is not None else False
    # Not in a write turn: each batch is a short transaction of its own, REST writes go between them.
    deleted, never = retention.prune(session, settings, utcnow(), dry_run=dry_run)
    return PruneOut(dry_run=dry_run, deleted=deleted, kept_for_ever=never)
