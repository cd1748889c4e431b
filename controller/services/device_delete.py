"""Deleting a device (`DELETE /api/v1/devices/{id}?history=keep|purge`, `fleet device delete`)
and restoring one (docs/architecture.md#housekeeping).

In order: its unfinished tasks are canceled (a running one is sent a cancel while the device may
still hear it, then ended `canceled` by the controller, since a device without a login can no
longer report); its broker login is revoked and the broker files rewritten and reloaded (the
broker refuses it from then on; NATS and the embedded broker also close its live connection);
its retained status is cleared on the broker; the accounts bound to it are deleted (their logins
lived in its browser profiles) and named in the answer; the device row stays as a tombstone
(`deleted_at`): hidden from lists, and a birth, heartbeat or event of that id is ignored, so a
stolen login or an ad hoc birth never brings it back as a normal member. `keep` leaves its
tasks, events and presence history queryable; `purge` deletes them. `restore` lifts the
tombstone (the device needs a new login: `fleet device add`).
"""

from __future__ import annotations

import logging
from typing import Protocol, runtime_checkable

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from config.settings import FleetSettings
from controller.models import Account, Device, DeviceConnection, MqttIdentity, Task, TaskEventRecord
from controller.services import account_backups, identities, lifecycle
from controller.services.bulk_cancel import cancel_matching
from controller.services.devices import device_not_found
from controller.services.errors import ConflictError
from controller.services.publisher import Publisher
from controller.services.tasks import add_controller_event
from schemas.common import utcnow
from schemas.events import EventKind
from schemas.housekeeping import DeviceDeleted, HistoryChoice, TaskCancelFilter
from schemas.topics import device_config, device_status

log = logging.getLogger(__name__)

PURGE_BATCH = 1000  # rows deleted per statement while purging


@runtime_checkable
class BrokerAdmin(Protocol):
    """What the controller's MQTT client does beyond `Publisher` (controller.mqtt.ControllerMqtt)."""

    def clear_retained(self, topic: str) -> bool: ...


def delete_device(session: Session, device_id: str, history: HistoryChoice, publisher: Publisher,
                  settings: FleetSettings, own_login: str | None) -> DeviceDeleted:
    """Delete `device_id` as the module docstring says; what was done."""
    device = session.get(Device, device_id)
    if device is None:
        raise device_not_found(device_id)
    if own_login is not None and device_id == own_login:
        raise ConflictError(f"{device_id!r} is the broker login this controller uses; it cannot be deleted as a device")
    session.rollback()
    canceled = cancel_matching(session, TaskCancelFilter(device_id=device_id), publisher).count
    _end_unfinished(session, device_id)
    revoked, files = _revoke(session, device_id, settings, own_login)
    cleared = _clear_retained(device_id, publisher)
    device = session.get(Device, device_id, with_for_update=True)
    assert device is not None
    accounts = list(session.scalars(select(Account.name).where(Account.device_id == device_id).order_by(Account.name)))
    backup_files = account_backups.forget(session, accounts, settings.data_dir / "files")
    session.execute(delete(Account).where(Account.device_id == device_id))
    device.deleted_at = device.deleted_at or utcnow()
    device.status, device.online_since, device.silent_after = "offline", None, None
    session.commit()
    account_backups.unlink(backup_files)
    purged = _purge(session, device_id) if history == "purge" else (0, 0)
    log.info("device %s deleted (history %s): %d task(s) canceled, login %s, %d account(s) removed", device_id,
             history, canceled, "revoked" if revoked else "absent", len(accounts))
    return DeviceDeleted(id=device_id, history=history, identity_revoked=revoked, broker_files=files,
                         tasks_canceled=canceled, accounts_removed=accounts, retained_cleared=cleared,
                         tasks_purged=purged[0], connections_purged=purged[1])


def _end_unfinished(session: Session, device_id: str) -> None:
    """Tasks the cancel left to their device to end (accepted, running): ended here, since the
    device loses the login it would report with."""
    unfinished = [status.value for status in lifecycle.UNFINISHED_STATUSES]
    tasks = session.scalars(select(Task).where(Task.device_id == device_id, Task.status.in_(unfinished))
                            .with_for_update()).all()
    for task in tasks:
        add_controller_event(session, task, EventKind.CANCELED, "canceled: its device was deleted")
    session.commit()


def _revoke(session: Session, device_id: str, settings: FleetSettings, own_login: str | None) -> tuple[bool, str | None]:
    identity = session.get(MqttIdentity, device_id)
    if identity is None or identity.role != "device":
        session.rollback()
        return False, None
    identities.revoke_identity(session, device_id, own_login)
    return True, identities.apply_to_broker(session, settings)


def _clear_retained(device_id: str, publisher: Publisher) -> list[str]:
    """The device's retained topics, emptied on the broker: its status and its desired config
    (which names its groups and settings)."""
    if not isinstance(publisher, BrokerAdmin):
        return []
    topics = [device_status(device_id), device_config(device_id)]
    return [topic for topic in topics if publisher.clear_retained(topic)]


def _purge(session: Session, device_id: str) -> tuple[int, int]:
    """Delete the device's tasks (with their events) and presence history, in batches."""
    tasks = 0
    while True:
        ids = list(session.scalars(select(Task.id).where(Task.device_id == device_id).limit(PURGE_BATCH)))
        if not ids:
            break
        session.execute(delete(TaskEventRecord).where(TaskEventRecord.task_id.in_(ids)))
        session.execute(delete(Task).where(Task.id.in_(ids)))
        session.commit()
        tasks += len(ids)
    connections = 0
    while True:
        ids = list(session.scalars(select(DeviceConnection.id).where(DeviceConnection.device_id == device_id)
                                   .limit(PURGE_BATCH)))
        if not ids:
            break
        session.execute(delete(DeviceConnection).where(DeviceConnection.id.in_(ids)))
        session.commit()
        connections += len(ids)
    return tasks, connections


def restore_device(session: Session, device_id: str) -> Device:
    """Lift a device's tombstone: its next birth is recorded again (it needs a login first)."""
    device = session.get(Device, device_id)
    if device is None:
        raise device_not_found(device_id)
    session.execute(update(Device).where(Device.id == device_id).values(deleted_at=None))
    session.commit()
    session.refresh(device)
    log.info("device %s restored", device_id)
    return device
