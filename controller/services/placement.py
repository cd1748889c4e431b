"""Placement: a task for "any one online device of this target", for work that does not care
which PC does it (`POST /api/v1/tasks` with `placement`; docs/architecture.md#housekeeping).

Among the target's online devices that can run the task type, the controller picks, in order:
1. for a task naming `params.platform` and no account, a device holding an account of that
   platform (its browser has the platform's logins, the seed's "account of that platform");
   for a task naming an account, only the device holding it;
2. the fewest unfinished tasks in SQL (queued, dispatched, accepted, running);
3. the lowest CPU load of its latest heartbeat (`devices.metrics`), a device without one last;
4. the device id, so the choice is reproducible.
No eligible device is a 409 that says why (none selected, none online, none with the type).
"""

from __future__ import annotations

import logging
from typing import Any, NamedTuple

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from controller.models import Account, Device, Task
from controller.services import lifecycle, targets
from controller.services.errors import ConflictError
from schemas.housekeeping import Placement

log = logging.getLogger(__name__)


class Candidate(NamedTuple):
    id: str
    status: str
    facts: dict[str, Any] | None
    metrics: dict[str, Any] | None


def _target_devices(session: Session, placement: Placement) -> list[Candidate]:
    """The target's devices (`targets.select_devices`), with the facts and load they are judged by."""
    selected = targets.select_devices(session, placement.target)
    if not selected:
        return []
    ids = [device.id for device in selected]
    rows = {row.id: row for row in session.execute(
        select(Device.id, Device.facts, Device.metrics).where(Device.id.in_(ids)))}
    return [Candidate(d.id, d.status, rows[d.id].facts, rows[d.id].metrics) for d in selected if d.id in rows]


def _can_run(candidate: Candidate, task_type: str, builtin: bool) -> bool:
    types = (candidate.facts or {}).get("task_types")
    return builtin if not types else task_type in types


def _cpu(candidate: Candidate) -> float:
    value = (candidate.metrics or {}).get("cpu_percent")
    return float(value) if isinstance(value, (int, float)) else 101.0


def choose_device(session: Session, placement: Placement, task_type: str, account: str | None,
                  params: dict[str, Any], builtin: bool) -> str:
    """The id of the device the task goes to (see the module docstring); `builtin`: the type
    is built in, so a device whose facts list no types is taken to run it."""
    selected = _target_devices(session, placement)
    if not selected:
        raise ConflictError("placement: the target selects no device; check it with POST /api/v1/targets/preview")
    online = [c for c in selected if c.status == "online"]
    if not online:
        raise ConflictError(f"placement: none of the {len(selected)} device(s) of the target is online; "
                            "try again later, or give device_id to queue the task for one of them")
    able = [c for c in online if _can_run(c, task_type, builtin)]
    if not able:
        raise ConflictError(f"placement: none of the {len(online)} online device(s) of the target runs task type "
                            f"{task_type!r}")
    ids = [c.id for c in able]
    if account is not None:
        holder = session.scalar(select(Account.device_id).where(Account.name == account))
        able = [c for c in able if c.id == holder]
        if not able:
            raise ConflictError(f"placement: account {account!r} is not held by an online device of the target")
    unfinished = [s.value for s in lifecycle.UNFINISHED_STATUSES]
    counted = select(Task.device_id, func.count()).where(Task.device_id.in_(ids), Task.status.in_(unfinished))
    load: dict[str, int] = {device_id: int(count) for device_id, count in session.execute(counted.group_by(Task.device_id))}
    platform = params.get("platform") if account is None else None
    holders: set[str] = set()
    if isinstance(platform, str):
        holders = set(session.scalars(select(Account.device_id).where(Account.platform == platform,
                                                                      Account.device_id.in_(ids))))
    best = min(able, key=lambda c: (c.id not in holders, load.get(c.id, 0), _cpu(c), c.id))
    log.info("placement: task type %s goes to %s (%d unfinished task(s); %d candidate(s))", task_type, best.id,
             load.get(best.id, 0), len(able))
    return best.id
