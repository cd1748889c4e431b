"""REST bodies of housekeeping (docs/architecture.md#housekeeping): bulk cancel, deleting a
device, pruning old history, and the placement of a task on one device of a target."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, model_validator

from schemas.common import DeviceId, StrictModel, TaskType
from schemas.targets import Target

CANCELABLE_STATUSES = ("queued", "dispatched", "accepted", "running")
CancelableStatus = Literal["queued", "dispatched", "accepted", "running"]
IDS_LISTED = 100  # task ids an answer lists; `count` says how many there were


class TaskCancelFilter(StrictModel):
    """`POST /api/v1/tasks/cancel`: which unfinished tasks to cancel. Filters given together
    narrow each other; at least one is required (there is no "cancel everything" by accident).
    A new filter is a field here plus a column in `controller.services.bulk_cancel.FILTER_COLUMNS`."""

    device_id: DeviceId | None = Field(None, description="tasks of this device")
    account: str | None = Field(None, min_length=1, max_length=200, description="tasks acting for this account")
    broadcast_id: str | None = Field(None, min_length=1, max_length=160, description="the runs of this broadcast")
    job_id: str | None = Field(None, min_length=1, max_length=160, description="the runs of this job (it keeps "
                               "rolling out: POST /api/v1/jobs/{id}/cancel stops it too)")
    type: TaskType | None = Field(None, description="tasks of this type")
    status: list[CancelableStatus] | None = Field(
        None, min_length=1, description="only tasks in these statuses; default: every unfinished task, and tasks "
        "waiting for a retry")
    dry_run: bool = Field(False, description="count and list what would be canceled, cancel nothing")

    @model_validator(mode="after")
    def _some_filter(self) -> "TaskCancelFilter":
        if not self.filters():
            raise ValueError("name the tasks to cancel: give at least one of device_id, account, broadcast_id, job_id, type "
                             "(status alone would cancel across the whole fleet)")
        return self

    def filters(self) -> dict[str, str]:
        """The column filters given (field → value), `status` and `dry_run` aside."""
        skip = {"status", "dry_run"}
        return {name: value for name, value in self.model_dump().items() if name not in skip and value is not None}


class TaskCancelOut(BaseModel):
    count: int = Field(description="tasks matched (and, unless dry_run, canceled or told to stop)")
    dry_run: bool
    task_ids: list[str] = Field(description=f"the first {IDS_LISTED} of them, oldest first")
    truncated: bool
    skipped: int = Field(0, description="tasks that finished between the look-up and their cancel")


HistoryChoice = Literal["keep", "purge"]


class DeviceDeleted(BaseModel):
    """`DELETE /api/v1/devices/{id}`: what was done."""

    id: str
    history: HistoryChoice
    identity_revoked: bool = Field(description="its broker login existed and is revoked (refused from now on)")
    broker_files: str | None = Field(None, description="what happened to the broker files (written and reloaded, "
                                     "or what to install by hand)")
    tasks_canceled: int
    accounts_removed: list[str] = Field(description="accounts that were bound to it, deleted with it (their logins "
                                        "lived in its browser profiles); add them again on another device")
    retained_cleared: list[str] = Field(description="retained topics of the device that were cleared on the broker")
    tasks_purged: int = 0
    connections_purged: int = 0


class PruneRequest(StrictModel):
    dry_run: bool = Field(False, description="count what would be deleted, delete nothing")


class PruneOut(BaseModel):
    dry_run: bool
    deleted: dict[str, int] = Field(description="rows deleted (or, with dry_run, that would be) per kind")
    kept_for_ever: list[str] = Field(description="kinds whose retention is `never`")


class Placement(StrictModel):
    """Run the task on ONE online device of `target`, chosen by the controller: the fewest
    unfinished tasks, then the lowest CPU load of its latest heartbeat; for a task that names a
    `params.platform` and no account, devices holding an account of that platform first."""

    target: Target
    strategy: Literal["least_loaded"] = "least_loaded"
