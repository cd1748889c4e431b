"""How many devices are online or offline and how many tasks are in each state: two GROUP BY
queries over indexed columns, for the dashboard's overview."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from controller.models import Device, Task
from schemas.events import TaskStatus


def devices_by_status(session: Session) -> dict[str, int]:
    """{"online": n, "offline": m} (both keys always present)."""
    counts = {"online": 0, "offline": 0}
    query = select(Device.status, func.count()).where(Device.deleted_at.is_(None)).group_by(Device.status)
    for status, count in session.execute(query):
        counts[str(status)] = int(count)
    return counts


def tasks_by_status(session: Session) -> dict[str, int]:
    """Tasks per status, every status present (0 when none), in lifecycle order."""
    counts = {status.value: 0 for status in TaskStatus}
    for status, count in session.execute(select(Task.status, func.count()).group_by(Task.status)):
        counts[str(status)] = int(count)
    return counts
