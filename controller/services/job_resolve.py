"""TEMPORARY: the devices a job's target selects, until `controller.services.targets.select_devices`
(the lead's, issue 16) lands on main; delete this module then and import that one.

Same signature and answer: `TargetDevice`s sorted by id. Selects by device_ids, groups (the
devices' groups column), accounts (the `accounts` table) or all; tag expressions need the real
resolver and are refused here with a 422.
"""

from __future__ import annotations

from typing import NamedTuple

from sqlalchemy import select
from sqlalchemy.orm import Session

from controller.models import Account, Device
from controller.services.errors import InvalidRequestError
from schemas.targets import Target


class TargetDevice(NamedTuple):
    id: str
    status: str
    groups: list[str]
    tags: dict[str, str]
    accounts: list[str]


def select_devices(session: Session, target: Target) -> list[TargetDevice]:
    if target.tags is not None:
        raise InvalidRequestError("tag expressions are not available on this controller yet; target device_ids, "
                                  "groups, accounts or all")
    query = select(Device.id, Device.status, Device.groups).order_by(Device.id)
    if target.device_ids is not None:
        query = query.where(Device.id.in_(target.device_ids))
    rows = list(session.execute(query))
    held: dict[str, list[str]] = {}
    account_query = select(Account.name, Account.device_id).order_by(Account.name)
    if target.accounts is not None:
        account_query = account_query.where(Account.name.in_(target.accounts))
    for name, device_id in session.execute(account_query):
        held.setdefault(device_id, []).append(name)
    found = []
    for device_id, status, groups in rows:
        if target.groups is not None and not set(target.groups) & set(groups or []):
            continue
        if target.accounts is not None and device_id not in held:
            continue
        found.append(TargetDevice(device_id, status, list(groups or []), {}, held.get(device_id, [])))
    return found
