"""Targets: the devices a job, a placement or a dry run addresses (docs/architecture.md#targets),
and the tags operators set on devices for them.

`select_devices` reads four columns of every device, not whole rows (facts and metrics are
JSON), and tests groups and tag expressions in Python: a fleet of 10,000 devices is a few
milliseconds of it, and the same code serves SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections import defaultdict
from typing import NamedTuple

from sqlalchemy import select
from sqlalchemy.orm import Session

from controller.models import Account, Device
from controller.services.errors import InvalidRequestError, NotFoundError
from schemas.tag_expressions import TagExpression, parse_tag_expression
from schemas.targets import TAGS_PER_DEVICE_MAX, TagsChange, Target, TargetPreview


class TargetDevice(NamedTuple):
    """A device a target selects. `accounts`: the accounts bound to it (for an `accounts`
    target, only those the target names)."""

    id: str
    status: str
    groups: list[str]
    tags: dict[str, str]
    accounts: list[str]


def expression(text: str) -> TagExpression:
    """`text` parsed; InvalidRequestError (422) saying where it is wrong."""
    try:
        return parse_tag_expression(text)
    except ValueError as exc:
        raise InvalidRequestError(str(exc)) from None


def _held_accounts(session: Session, names: list[str] | None) -> dict[str, list[str]]:
    """device id -> the accounts bound to it (only `names`, when given), sorted."""
    query = select(Account.device_id, Account.name).order_by(Account.name)
    if names is not None:
        query = query.where(Account.name.in_(names))
    held: dict[str, list[str]] = defaultdict(list)
    for device_id, name in session.execute(query):
        held[device_id].append(name)
    return held


def select_devices(session: Session, target: Target) -> list[TargetDevice]:
    """The devices `target` selects now, by id; every selector given must match."""
    query = select(Device.id, Device.status, Device.groups, Device.tags).order_by(Device.id)
    if target.device_ids is not None:
        query = query.where(Device.id.in_(target.device_ids))
    held = _held_accounts(session, target.accounts)
    if target.accounts is not None:
        query = query.where(Device.id.in_(list(held)))
    tags = expression(target.tags) if target.tags is not None else None
    wanted_groups = set(target.groups or ())
    selected = []
    for row in session.execute(query):
        groups, device_tags = list(row.groups or ()), dict(row.tags or {})
        if wanted_groups and wanted_groups.isdisjoint(groups):
            continue
        if tags is not None and not tags.matches(groups, device_tags):
            continue
        selected.append(TargetDevice(row.id, row.status, groups, device_tags, held.get(row.id, [])))
    return selected


def preview(session: Session, target: Target, limit: int) -> TargetPreview:
    """A dry run: what `target` selects now, and the names in it that match nothing."""
    devices = select_devices(session, target)
    unknown_ids: list[str] = []
    if target.device_ids is not None:
        known = set(session.scalars(select(Device.id).where(Device.id.in_(target.device_ids))))
        unknown_ids = sorted(set(target.device_ids) - known)
    unknown_accounts: list[str] = []
    if target.accounts is not None:
        bound = set(session.scalars(select(Account.name).where(Account.name.in_(target.accounts))))
        unknown_accounts = sorted(set(target.accounts) - bound)
    unknown_keys: list[str] = []
    if target.tags is not None:
        used = {key for tags in session.scalars(select(Device.tags)) for key in (tags or {})}
        unknown_keys = sorted(expression(target.tags).keys - used)
    return TargetPreview(
        count=len(devices),
        online=sum(device.status == "online" for device in devices),
        device_ids=[device.id for device in devices[:limit]],
        truncated=len(devices) > limit,
        unknown_device_ids=unknown_ids,
        unknown_accounts=unknown_accounts,
        unknown_tag_keys=unknown_keys,
    )


def _device(session: Session, device_id: str) -> Device:
    device = session.get(Device, device_id, with_for_update=True)
    if device is None:
        raise NotFoundError(
            f"device {device_id!r} has never connected; tags can be set once it has (see GET /api/v1/devices)"
        )
    return device


def replace_tags(session: Session, device_id: str, tags: dict[str, str]) -> Device:
    """The device's tags become exactly `tags`."""
    device = _device(session, device_id)
    device.tags = dict(sorted(tags.items()))
    session.commit()
    return device


def change_tags(session: Session, device_id: str, change: TagsChange) -> Device:
    """Set `change.set`, remove `change.remove` (absent keys are fine), keep the other tags."""
    device = _device(session, device_id)
    tags = {key: value for key, value in (device.tags or {}).items() if key not in change.remove}
    tags.update(change.set)
    if len(tags) > TAGS_PER_DEVICE_MAX:
        raise InvalidRequestError(
            f"device {device_id!r} would have {len(tags)} tags; at most {TAGS_PER_DEVICE_MAX}: remove some first"
        )
    device.tags = dict(sorted(tags.items()))
    session.commit()
    return device

