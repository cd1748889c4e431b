"""Device presence (births, last wills and heartbeats: docs/architecture.md#presence) and device look-ups."""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import bindparam, func, insert, or_, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.util import identity_key

from controller.models import Device, DeviceConnection
from controller.services.errors import NotFoundError
from controller.services.upsert import insert_ignore
from controller.warn_once import warn_once
from schemas.common import utcnow
from schemas.status import DeviceStatus, Heartbeat, boot_id
from schemas.tag_expressions import TagExpression

log = logging.getLogger(__name__)

FLAP_WINDOW = timedelta(seconds=60)
FLAP_BIRTHS = 5  # births within FLAP_WINDOW that make a device "flapping"
HEARTBEAT_MISSES = 2  # heartbeat intervals without one before a device is taken for offline (docs/architecture.md#presence)
HEARTBEAT_CHUNK = 500  # devices read per query when a batch of heartbeats is recorded
# Statements built once (building an expression costs more CPU than running it on a small batch).
_BEAT_READ = (select(Device.id, Device.session_id, Device.status, Device.heartbeat_interval)
              .where(Device.id.in_(bindparam("ids", expanding=True)), Device.deleted_at.is_(None))
              .order_by(Device.id).with_for_update())
_BEAT = update(Device).where(Device.id == bindparam("b_id")).values(
    last_seen=bindparam("b_now"), last_heartbeat=bindparam("b_now"), silent_after=bindparam("b_silent"),
    metrics=bindparam("b_metrics"))
_REVIVE = update(Device).where(Device.id == bindparam("b_id")).values(status="online", online_since=bindparam("b_now"))


def device_not_found(device_id: str) -> NotFoundError:
    return NotFoundError(
        f"device {device_id!r} is not known; devices appear after their first connection to the broker "
        "(start the device daemon, then check GET /api/v1/devices)"
    )


def _record_connection(session: Session, device_id: str, status: DeviceStatus, at: datetime) -> None:
    session.add(
        DeviceConnection(device_id=device_id, state=status.state, session_id=status.session_id, at=at, reason=status.reason)
    )


def apply_status(session: Session, topic_device_id: str, status: DeviceStatus) -> bool:
    """`stage_status` in a transaction of its own, committed."""
    new_session = stage_status(session, topic_device_id, status)
    session.commit()
    return new_session


@dataclass
class PresenceCache:
    """The devices of an ingest batch's statuses and their recent births, read in one query
    each for the whole batch (`preload_presence`), so a birth costs no query of its own: at
    fleet scale thousands of devices connect together, and three queries and a flush per birth
    made the controller take minutes to show 10,000 devices online."""

    devices: dict[str, Device | None]
    recent: dict[str, list[str]]  # device id → session ids of its births within FLAP_WINDOW


def preload_presence(session: Session, device_ids: Collection[str]) -> PresenceCache:
    """Read (and lock) the given devices and their births within FLAP_WINDOW, HEARTBEAT_CHUNK ids a query."""
    ids = list(dict.fromkeys(device_ids))
    cache = PresenceCache(devices=dict.fromkeys(ids), recent={device_id: [] for device_id in ids})
    since = utcnow() - FLAP_WINDOW
    for start in range(0, len(ids), HEARTBEAT_CHUNK):
        chunk = ids[start : start + HEARTBEAT_CHUNK]
        for device in session.scalars(select(Device).where(Device.id.in_(chunk)).order_by(Device.id).with_for_update()):
            cache.devices[device.id] = device
        births = session.execute(
            select(DeviceConnection.device_id, DeviceConnection.session_id).where(
                DeviceConnection.device_id.in_(chunk), DeviceConnection.state == "online", DeviceConnection.at >= since
            )
        )
        for device_id, session_id in births:
            cache.recent[device_id].append(session_id)
    return cache


def stage_status(
    session: Session, topic_device_id: str, status: DeviceStatus, cache: PresenceCache | None = None
) -> bool:
    """Record a birth or last will from `devices/<topic_device_id>/status`, in the caller's
    transaction without committing it; with `cache` (from `preload_presence`) without a query.

    Returns True when this was the birth of a new session, so the device's pending tasks must
    be dispatched again. A will whose session id is not the device's current one is stale and
    ignored: it never marks a live device offline.
    """
    if status.device_id != topic_device_id:
        warn_once(
            session,
            "status",
            topic_device_id,
            "ignored a status on devices/%s/status that names another device (%s)",
            topic_device_id,
            status.device_id,
        )
        return False
    now = utcnow()
    if cache is not None and topic_device_id in cache.devices:
        device = cache.devices[topic_device_id]
    else:
        device = session.get(Device, topic_device_id, with_for_update=True)
    if device is None:  # first seen: inserted (or found, when another controller inserted it first)
        values = {"status": "offline", "created_at": now}
        if status.state != "online":
            values |= {"session_id": status.session_id, "last_seen": now}
        device, created = insert_device(session, topic_device_id, values)
        if cache is not None:
            cache.devices[topic_device_id] = device
        if created and status.state != "online":
            _record_connection(session, topic_device_id, status, now)
            return False
    if device.deleted_at is not None:  # docs/architecture.md#housekeeping: a deleted id stays deleted
        warn_once(session, "deleted", topic_device_id, "ignored a status of deleted device %s (restore it with "
                  "POST /api/v1/devices/%s/restore to admit it again)", topic_device_id, topic_device_id)
        return False
    if status.state == "online":
        return _stage_birth(session, device, status, now, cache)
    _stage_will(session, device, status, now)
    return False


def _stage_birth(
    session: Session, device: Device, status: DeviceStatus, now: datetime, cache: PresenceCache | None
) -> bool:
    """`stage_status` for a birth: True when it starts a new session."""
    if device.status == "offline" and device.session_id == status.session_id:
        # The controller took this session offline (silent, or its will): a birth of it again is
        # the retained copy replayed to a controller that subscribed again, e.g. after losing
        # its own broker node, while the device's node is dead. Only a heartbeat revives it.
        log.debug("ignored a replayed birth of device %s: session %s was taken offline", device.id, status.session_id)
        return False
    new_session = device.status != "online" or device.session_id != status.session_id
    replaced = device.session_id if device.status == "online" and new_session else None
    if new_session:
        device.status = "online"
        device.session_id = status.session_id
        device.online_since = now
        _record_connection(session, device.id, status, now)
        recent = None
        if cache is None:
            session.flush()  # _presence_alert's query counts this birth
        else:
            recent = cache.recent.setdefault(device.id, [])
            recent.append(status.session_id)
        device.presence_alert = _presence_alert(session, device.id, status.session_id, replaced, now, recent)
        log.info("device %s is online (session %s)", device.id, status.session_id)
    if status.facts is not None:
        device.facts = status.facts.model_dump(mode="json")
        device.name = status.facts.name
        device.declared_groups = list(status.facts.groups)  # membership is the controller's: services/groups.py
        device.heartbeat_interval = status.facts.heartbeat_interval
    device.last_seen = now
    if new_session or device.silent_after is None:
        # Only a new session starts the silence clock: a birth of the current one is no sign
        # of life, it may be the retained copy replayed to a controller that subscribed again
        # (after losing its own broker node), while the device's node is dead.
        device.silent_after = _silent_after(device.heartbeat_interval, now)
    return new_session


def _stage_will(session: Session, device: Device, status: DeviceStatus, now: datetime) -> None:
    """`stage_status` for a last will or shutdown status: the device goes offline, unless the
    will is a stale one of a session that already ended."""
    if device.session_id != status.session_id:
        log.info(
            "ignored a stale last will of device %s: session %s ended, the current session is %s",
            device.id,
            status.session_id,
            device.session_id,
        )
        return
    if device.status != "offline":
        device.status = "offline"
        device.online_since = None
        device.silent_after = None
        _record_connection(session, device.id, status, now)
        log.info("device %s is offline (session %s, %s)", device.id, status.session_id, status.reason or "no reason given")


def insert_device(session: Session, device_id: str, values: Mapping[str, Any]) -> tuple[Device, bool]:
    """The device row `device_id`, inserted with `values` unless it exists (several controllers
    may see a new device at the same moment: INSERT … ON CONFLICT DO NOTHING), read and locked;
    and whether this call inserted it."""
    created = insert_ignore(session, Device, {"id": device_id, **values}) == 1
    device = session.get(Device, device_id, with_for_update=True, populate_existing=True)
    assert device is not None
    return device, created


def _silent_after(heartbeat_interval: int | None, now: datetime) -> datetime | None:
    if heartbeat_interval is None:
        return None  # a device that sends no heartbeats is judged by its will alone
    return now + timedelta(seconds=HEARTBEAT_MISSES * heartbeat_interval)


def record_heartbeat(session: Session, topic_device_id: str, heartbeat: Heartbeat) -> None:
    """`stage_heartbeats` for one heartbeat, committed."""
    stage_heartbeats(session, {topic_device_id: heartbeat})
    session.commit()


def stage_heartbeats(session: Session, latest: Mapping[str, Heartbeat]) -> set[str]:
    """Devices are alive: push their silence deadlines back and keep their load, given the latest
    heartbeat of each (by topic device id), in the caller's transaction without committing it.
    One taken for offline because it fell silent, whose session is still the current one, is
    online again. A heartbeat naming another device, or a session whose birth was not seen
    (yet), is ignored. Returns the ids of devices whose heartbeat was ignored because their
    current session is another one (or they are not known yet).

    Plain rows, no ORM objects: per HEARTBEAT_CHUNK devices one SELECT of four columns and one
    executemany UPDATE of four (10,000 devices every 30 s are 333 heartbeats a second; loading
    each device's whole row, JSON facts included, cost four times as much CPU)."""
    ids = [device_id for device_id, beat in latest.items() if beat.device_id == device_id]
    unmatched = set(ids)
    if not ids:
        return unmatched
    session.flush()  # births staged in this transaction are what the SELECT below sees
    connection, now = session.connection(), utcnow()
    beats: list[dict[str, Any]] = []
    revived: list[tuple[str, str]] = []
    for start in range(0, len(ids), HEARTBEAT_CHUNK):
        for device_id, session_id, status, interval in connection.execute(_BEAT_READ, {"ids": ids[start:start + HEARTBEAT_CHUNK]}):
            heartbeat = latest[device_id]
            if session_id != heartbeat.session_id:
                continue
            unmatched.discard(device_id)
            beats.append({"b_id": device_id, "b_now": now, "b_silent": _silent_after(interval, now),
                          "b_metrics": heartbeat.metrics.model_dump() if heartbeat.metrics else None})
            if status == "offline":
                revived.append((device_id, session_id))
    if beats:
        connection.execute(_BEAT, beats)
    if revived:
        _revive(session, revived, now)
    _expire(session, [beat["b_id"] for beat in beats])
    return unmatched


def _revive(session: Session, revived: list[tuple[str, str]], now: datetime) -> None:
    """Devices taken for silent whose heartbeats resumed, in their session: online again."""
    connection = session.connection()
    connection.execute(_REVIVE, [{"b_id": device_id, "b_now": now} for device_id, _ in revived])
    connection.execute(insert(DeviceConnection), [
        {"device_id": device_id, "state": "online", "session_id": session_id, "at": now, "reason": "heartbeats resumed"}
        for device_id, session_id in revived])
    for device_id, session_id in revived:
        log.info("device %s is online again: its heartbeats resumed (session %s)", device_id, session_id)


def _expire(session: Session, device_ids: list[str]) -> None:
    """ORM copies of these devices in the session read their new values again."""
    for device_id in device_ids:
        cached = session.identity_map.get(identity_key(Device, device_id))
        if cached is not None:
            session.expire(cached)


def mark_silent(session: Session, now: datetime) -> int:
    """Take for offline every online device that missed its last HEARTBEAT_MISSES heartbeats
    (its network vanished without the broker noticing); returns how many."""
    # By `silent_after` alone: it is set only while a device is online, and a `status` condition
    # made SQLite walk the status index over every online device, once a second.
    due = session.scalars(
        select(Device).where(Device.silent_after <= now).limit(500).with_for_update(skip_locked=True)
    ).all()
    silent = [device for device in due if device.status == "online"]
    for device in due:
        device.silent_after = None
    for device in silent:
        assert device.heartbeat_interval is not None
        quiet = HEARTBEAT_MISSES * device.heartbeat_interval
        device.status = "offline"
        device.online_since = None
        session.add(DeviceConnection(device_id=device.id, state="offline", session_id=device.session_id or "?", at=now,
                                     reason=f"silent: no heartbeat for {quiet} s"))
        log.warning("device %s is offline: no heartbeat for %d s", device.id, quiet)
    session.commit()
    return len(silent)


def _presence_alert(
    session: Session, device_id: str, session_id: str, replaced: str | None, now: datetime,
    recent: list[str] | None = None,
) -> str | None:
    """Why the device's presence cannot be trusted right now, judged from its births (`recent`:
    the session ids of those within FLAP_WINDOW, this one included; read when not given):
    several daemons taking turns with one id, one daemon reconnecting over and over, or a new
    daemon taking over while the last one never went offline (`replaced` is that one's session)."""
    if recent is None:
        recent = list(
            session.scalars(
                select(DeviceConnection.session_id).where(
                    DeviceConnection.device_id == device_id,
                    DeviceConnection.state == "online",
                    DeviceConnection.at >= now - FLAP_WINDOW,
                )
            )
        )
    if len(recent) < FLAP_BIRTHS:
        if replaced is None or boot_id(replaced) == boot_id(session_id):
            return None
        alert = (
            f"takeover: daemon {boot_id(session_id)} connected as this device while daemon {boot_id(replaced)} "
            "had not gone offline; if both still run, two PCs share this id: give each its own FLEET_DEVICE_ID"
        )
        warn_once(session, "takeover", device_id, "device %s: %s", device_id, alert)
        return alert
    boots = sorted({boot_id(session_id) for session_id in recent})
    window = int(FLAP_WINDOW.total_seconds())
    if len(boots) > 1:
        alert = (
            f"duplicate_id: {len(boots)} daemons (boot ids {', '.join(boots)}) took turns connecting as this device, "
            f"{len(recent)} times in {window} s; give each PC its own FLEET_DEVICE_ID"
        )
    else:
        alert = f"reconnect_storm: {len(recent)} connections in {window} s; check the PC's network and the broker's logs"
    warn_once(session, alert.split(":", 1)[0], device_id, "device %s: %s", device_id, alert)
    return alert


def get_device(session: Session, device_id: str) -> Device:
    device = session.get(Device, device_id)
    if device is None:
        raise device_not_found(device_id)
    return device


def list_devices(
    session: Session,
    *,
    status: Literal["online", "offline"] | None = None,
    group: str | None = None,
    q: str | None = None,
    tags: TagExpression | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[Device], int]:
    """A page of devices ordered by id, and the total number that match (deleted ones hidden)."""
    query = select(Device).where(Device.deleted_at.is_(None))
    if status is not None:
        query = query.where(Device.status == status)
    if q:
        query = query.where(or_(Device.id.icontains(q, autoescape=True), Device.name.icontains(q, autoescape=True)))
    query = query.order_by(Device.id)
    if group is not None or tags is not None:
        # Groups and tags live in JSON; fleets are small enough to filter them here.
        members = [
            device for device in session.scalars(query)
            if (group is None or group in (device.groups or []))
            and (tags is None or tags.matches(device.groups or [], device.tags or {}))
        ]
        return members[offset : offset + limit], len(members)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    return list(session.scalars(query.limit(limit).offset(offset))), total


def connections(session: Session, device_id: str, limit: int = 200) -> list[DeviceConnection]:
    """The device's presence history, newest first."""
    get_device(session, device_id)
    query = (
        select(DeviceConnection)
        .where(DeviceConnection.device_id == device_id)
        .order_by(DeviceConnection.id.desc())
        .limit(limit)
    )
    return list(session.scalars(query))
