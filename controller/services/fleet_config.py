"""Fleet config (docs/architecture.md#groups-and-fleet-config): desired settings at three levels
(global, per group, per device) in SQL, merged per device and published RETAINED on
`devices/<id>/config` with the device's groups and a revision; the device's report on
`devices/<id>/config/reported` is recorded by the ingest writer (`stage_reported`), and the
difference between the two is the device's drift.

Merge order: global, then the device's groups sorted by name (a setting two groups set comes
from the group whose name sorts last), then the device's own level. `sources` says where each
value came from.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any, Protocol

from pydantic import BaseModel
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from controller.models import Device, FleetConfigLevel
from controller.services.devices import HEARTBEAT_MISSES, get_device
from controller.services.errors import InvalidRequestError
from controller.services.upsert import insert_ignore
from schemas.common import utcnow
from schemas.config_sync import (
    ConfigLevel,
    ConfigScope,
    DesiredConfig,
    DeviceConfigView,
    DriftItem,
    ReportedConfig,
    check_remote_settings,
)
from schemas.topics import device_config

log = logging.getLogger(__name__)

Levels = dict[tuple[str, str], dict[str, Any]]


class RetainedPublisher(Protocol):
    def publish_retained(self, topic: str, model: BaseModel) -> bool:
        """Send `model` as JSON on `topic`, QoS 1, retained."""
        ...


def set_level(session: Session, scope: ConfigScope, name: str, values: dict[str, Any]) -> ConfigLevel:
    """Replace the settings of one level (an empty dict clears it); refuses what devices would."""
    accepted, refused = check_remote_settings(values)
    if refused:
        raise InvalidRequestError("; ".join(f"{key}: {why}" for key, why in sorted(refused.items())))
    if scope == "device":
        get_device(session, name)
    now = utcnow()
    if not accepted:
        session.execute(delete(FleetConfigLevel).where(FleetConfigLevel.scope == scope, FleetConfigLevel.name == name))
    elif insert_ignore(session, FleetConfigLevel, {"scope": scope, "name": name, "settings": accepted, "updated_at": now}) == 0:
        row = session.get(FleetConfigLevel, (scope, name), with_for_update=True, populate_existing=True)
        assert row is not None
        row.settings, row.updated_at = accepted, now
    session.commit()
    log.info("fleet config %s%s set: %s", scope, f" {name}" if name else "", ", ".join(sorted(accepted)) or "cleared")
    return ConfigLevel(scope=scope, name=name, settings=accepted, updated_at=now)


def list_levels(session: Session) -> list[ConfigLevel]:
    rows = session.scalars(select(FleetConfigLevel).order_by(FleetConfigLevel.scope, FleetConfigLevel.name))
    return [ConfigLevel(scope=row.scope, name=row.name, settings=row.settings, updated_at=row.updated_at)  # type: ignore[arg-type]
            for row in rows]


def affected(session: Session, scope: ConfigScope, name: str) -> list[str] | None:
    """The devices a change of this level concerns (None: all of them)."""
    if scope == "global":
        return None
    if scope == "device":
        return [name]
    return [device_id for device_id, groups in session.execute(select(Device.id, Device.groups)) if name in (groups or [])]


def _levels(session: Session) -> Levels:
    return {(row.scope, row.name): row.settings for row in session.scalars(select(FleetConfigLevel))}


def merged(levels: Levels, device_id: str, groups: list[str]) -> tuple[dict[str, Any], dict[str, str]]:
    """(settings, setting → source) of one device."""
    settings: dict[str, Any] = {}
    sources: dict[str, str] = {}
    order = [("global", "", "global")] + [("group", g, f"group:{g}") for g in sorted(groups)] + [("device", device_id, "device")]
    for scope, name, label in order:
        for key, value in levels.get((scope, name), {}).items():
            settings[key], sources[key] = value, label
    return settings, sources


_SYNC_COLUMNS = (Device.id, Device.groups, Device.config_revision, Device.config_desired, Device.config_reported)
CAS_TRIES = 3


def sync(session: Session, device_ids: list[str] | None, publisher: RetainedPublisher, *, resend: bool = False) -> int:
    """Publish the desired config of `device_ids` (None: every device) whose merged config
    changed since it was last published, each under its next revision; with `resend`, also
    those whose report answers an older revision. Five columns are read, not whole devices (at
    fleet scale this runs for every batch of births), and a revision is taken with a
    compare-and-set UPDATE, so two controllers never publish one revision twice; one that lost
    the race reads the row again and publishes only if its (newer) levels still differ.
    Publishing follows the commit. Returns how many were published."""
    levels = _levels(session)
    query = select(*_SYNC_COLUMNS).order_by(Device.id)
    if device_ids is not None:
        query = query.where(Device.id.in_(device_ids))
    outgoing = [message for row in session.execute(query).all()
                if (message := _claim(session, levels, row, resend)) is not None]
    session.commit()
    for message in outgoing:
        publisher.publish_retained(device_config(message.device_id), message)
    if outgoing:
        log.info("desired config published to %d device(s)", len(outgoing))
    return len(outgoing)


def _claim(session: Session, levels: Levels, row: Any, resend: bool) -> DesiredConfig | None:
    """The message to publish for one device (its revision claimed), or None."""
    for _ in range(CAS_TRIES):
        device_id, groups, revision, stored, reported = row
        settings, _sources = merged(levels, device_id, groups or [])
        desired = {"groups": sorted(groups or []), "settings": settings}
        if revision == 0 and not desired["groups"] and not settings:
            return None  # nothing was ever desired of it: no message (fleets not using config pay nothing)
        if desired == stored:
            behind = reported is None or int(reported.get("revision", 0)) != revision
            return DesiredConfig(device_id=device_id, revision=revision, at=utcnow(), **desired) if resend and behind else None
        claimed = session.execute(update(Device).where(Device.id == device_id, Device.config_revision == revision)
                                  .values(config_revision=revision + 1, config_desired=desired))
        if claimed.rowcount == 1:  # type: ignore[attr-defined]
            return DesiredConfig(device_id=device_id, revision=revision + 1, at=utcnow(), **desired)
        row = session.execute(select(*_SYNC_COLUMNS).where(Device.id == device_id)).one()
    log.warning("device %s: its desired config kept changing under this controller; another one publishes it", row[0])
    return None


def stage_reported(session: Session, device_id: str, report: ReportedConfig) -> None:
    """Record a device's report (the ingest writer's transaction). A heartbeat interval it
    applied is the one its silence is judged by from now on."""
    if report.device_id != device_id:
        log.warning("ignored a config report on devices/%s/config/reported naming device %s", device_id, report.device_id)
        return
    device = session.get(Device, device_id)
    if device is None:
        log.info("ignored a config report of unknown device %s", device_id)
        return
    device.config_reported = report.model_dump(mode="json")
    interval = report.applied.get("heartbeat_interval")
    if isinstance(interval, int) and interval != device.heartbeat_interval:
        device.heartbeat_interval = interval
        if device.status == "online":
            device.silent_after = utcnow() + timedelta(seconds=HEARTBEAT_MISSES * interval)
    if report.rejected:
        log.warning("device %s rejected config revision %d: %s", device_id, report.revision,
                    "; ".join(f"{k}: {v}" for k, v in sorted(report.rejected.items())))


def view(session: Session, device_id: str) -> DeviceConfigView:
    return _view(_levels(session), get_device(session, device_id))


def drift(session: Session) -> list[DeviceConfigView]:
    """Every device whose reported config differs from its desired one."""
    levels = _levels(session)
    views = (_view(levels, device) for device in session.scalars(select(Device).order_by(Device.id)))
    return [v for v in views if not v.in_sync]


def _view(levels: Levels, device: Device) -> DeviceConfigView:
    groups = sorted(device.groups or [])
    settings, sources = merged(levels, device.id, groups)
    reported = None if device.config_reported is None else ReportedConfig.model_validate(device.config_reported)
    items = _drift(settings, groups, reported, device.config_revision)
    return DeviceConfigView(device_id=device.id, revision=device.config_revision, desired=settings, sources=sources,
                            groups=groups, reported=reported, drift=items, in_sync=not items)


def _drift(settings: dict[str, Any], groups: list[str], reported: ReportedConfig | None, revision: int) -> list[DriftItem]:
    if reported is None:
        if not settings and not groups:
            return []
        return [DriftItem(setting=key, desired=value, reason="the device has not reported its config yet")
                for key, value in {**settings, "groups": groups}.items()]
    behind = "not applied yet" + (f" (reported revision {reported.revision} < desired {revision})"
                                  if reported.revision < revision else "")
    items = []
    for key, value in settings.items():
        if key in reported.rejected:
            items.append(DriftItem(setting=key, desired=value, reason=f"rejected by the device: {reported.rejected[key]}"))
        elif reported.applied.get(key) != value:
            items.append(DriftItem(setting=key, desired=value, reported=reported.applied.get(key), reason=behind))
    for key, value in reported.applied.items():
        if key not in settings:
            items.append(DriftItem(setting=key, reported=value, reason="still applied, no longer desired"))
    if sorted(reported.groups) != groups:
        items.append(DriftItem(setting="groups", desired=groups, reported=sorted(reported.groups), reason=behind))
    if reported.revision < revision and not items:
        items.append(DriftItem(setting="revision", desired=revision, reported=reported.revision,
                               reason="the device has not confirmed the latest desired config yet"))
    return items


def set_and_publish(session: Session, scope: ConfigScope, name: str, values: dict[str, Any],
                    publisher: RetainedPublisher) -> ConfigLevel:
    """`set_level`, then the desired config of every device it concerns is published."""
    level = set_level(session, scope, name, values)
    sync(session, affected(session, scope, name), publisher)
    return level
