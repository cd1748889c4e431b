"""Group membership, kept in one place: `devices.groups` in SQL, set by an operator (REST, CLI)
or adopted from what a device declares in its birth when FLEET_ACCEPT_DECLARED_GROUPS allows it.
Every change is carried to the two other places that must agree with it: the device's broker
identity (its ACL may read exactly its groups' task topics; `identities.apply_to_broker`
rewrites and reloads the broker files) and the device itself (its retained desired config
names its groups; `fleet_config.sync`), which subscribes and unsubscribes their task topics live.
(docs/architecture.md#groups-and-fleet-config)
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from config.settings import FleetSettings
from controller.models import Device, MqttIdentity
from controller.services import fleet_config
from controller.services.devices import device_not_found, insert_device
from controller.services.identities import apply_to_broker
from schemas.config_sync import DeviceGroups

log = logging.getLogger(__name__)


def describe(device: Device, broker: str | None = None) -> DeviceGroups:
    groups = sorted(device.groups or [])
    declared = sorted(device.declared_groups or [])
    return DeviceGroups(device_id=device.id, groups=groups, declared=declared,
                        declared_not_accepted=[g for g in declared if g not in groups], broker=broker)


def get_groups(session: Session, device_id: str) -> DeviceGroups:
    device = session.get(Device, device_id)
    if device is None:
        raise device_not_found(device_id)
    return describe(device)


def change_groups(
    session: Session, device_id: str, settings: FleetSettings, publisher: fleet_config.RetainedPublisher, *,
    replace: Sequence[str] | None = None, add: Sequence[str] = (), remove: Sequence[str] = (),
) -> DeviceGroups:
    """Set (`replace`), or add to and remove from, a device's groups; then its identity, the
    broker's ACL and the device's desired config follow. A device provisioned on the broker but
    never seen yet gets its row here, so its groups are waiting for its first connection."""
    device = _locked_device(session, device_id)
    current = set(device.groups or []) if replace is None else set(replace)
    groups = sorted((current | set(add)) - set(remove))
    changed = groups != sorted(device.groups or [])
    device.groups = groups
    identity_changed = _follow_identity(session, device_id, groups)
    session.commit()
    if changed:
        log.info("device %s groups set to %s", device_id, ", ".join(groups) or "none")
    broker = apply_to_broker(session, settings) if identity_changed else None
    fleet_config.sync(session, [device_id], publisher)
    return describe(device, broker)


def _locked_device(session: Session, device_id: str) -> Device:
    device = session.get(Device, device_id, with_for_update=True)
    if device is not None:
        return device
    identity = session.get(MqttIdentity, device_id)
    if identity is None or identity.role != "device" or identity.revoked_at is not None:
        raise device_not_found(device_id)
    device, _created = insert_device(session, device_id, {"status": "offline", "groups": [], "declared_groups": []})
    return device


def _follow_identity(session: Session, device_id: str, groups: list[str]) -> bool:
    """Give the device's live broker identity exactly `groups`; True when that changed it."""
    identity = session.get(MqttIdentity, device_id, with_for_update=True)
    if identity is None or identity.role != "device" or identity.revoked_at is not None:
        return False
    if sorted(identity.groups or []) == groups:
        return False
    identity.groups = list(groups)
    return True


def adopt_declared(session: Session, device_ids: list[str], settings: FleetSettings,
                   publisher: fleet_config.RetainedPublisher) -> None:
    """With FLEET_ACCEPT_DECLARED_GROUPS, the groups born devices declared become memberships
    (added, never removed). Without it nothing happens: declared groups stay shown, not counted."""
    if not settings.accept_declared_groups or not device_ids:
        return
    rows = session.execute(select(Device.id, Device.groups, Device.declared_groups).where(Device.id.in_(device_ids)))
    missing = {device_id: sorted(set(declared or []) - set(groups or []))
               for device_id, groups, declared in rows if set(declared or []) - set(groups or [])}
    session.rollback()
    for device_id, adding in missing.items():
        log.info("device %s: declared group(s) %s adopted (FLEET_ACCEPT_DECLARED_GROUPS)", device_id, ", ".join(adding))
        change_groups(session, device_id, settings, publisher, add=adding)


def after_births(session: Session, device_ids: list[str], settings: FleetSettings,
                 publisher: fleet_config.RetainedPublisher) -> None:
    """Born devices: adopt their declared groups if allowed, and send the desired config of
    those it never reached (new devices, a report of an older revision)."""
    adopt_declared(session, device_ids, settings, publisher)
    fleet_config.sync(session, device_ids, publisher, resend=True)


def after_provision(session: Session, identity: MqttIdentity, settings: FleetSettings,
                    publisher: fleet_config.RetainedPublisher) -> str:
    """A device provisioned with groups is their member from now on (its row is made if it was
    never seen); then the broker files are written. Says what happened to the broker."""
    if identity.role == "device" and identity.groups:
        change_groups(session, identity.name, settings, publisher, replace=list(identity.groups))
    return apply_to_broker(session, settings)
