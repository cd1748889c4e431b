"""REST shapes of `GET /api/v1/stats`: task counts and success rates over a time window
(docs/architecture.md#statistics-and-metrics)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

StatsWindow = Literal["1h", "24h", "7d"]
WINDOW_SECONDS: dict[str, int] = {"1h": 3600, "24h": 86_400, "7d": 604_800}
DEFAULT_WINDOW: StatsWindow = "24h"


class StatsFilters(BaseModel):
    """Only tasks matching every filter given are counted."""

    device_id: str | None = None
    account: str | None = None
    platform: str | None = None
    type: str | None = None


class GroupStats(BaseModel):
    """The tasks of one device, account, platform or task type within the window."""

    key: str = Field(description="the device id, account name, platform or task type")
    total: int = Field(description="tasks created within the window, in any state")
    finished: int = Field(description="those that reached a final state (succeeded, failed, rejected, timed_out, "
                          "canceled, expired)")
    succeeded: int
    success_rate: float | None = Field(description="succeeded / finished, from 0 to 1; null while none finished")
    median_seconds: float | None = Field(description="median run time (started → finished) of the succeeded "
                                         "tasks; null when none succeeded after starting")


class StatsOut(BaseModel):
    """Tasks created in [since, until), counted by the database."""

    since: datetime
    until: datetime
    filters: StatsFilters
    total: int
    by_state: dict[str, int] = Field(description="tasks per status (only the statuses that occur)")
    by_type: dict[str, int] = Field(description="tasks per type")
    finished: int
    succeeded: int
    success_rate: float | None = Field(description="succeeded / finished over all matching tasks")
    per_device: list[GroupStats] = Field(description="by device id, busiest first")
    per_account: list[GroupStats] = Field(description="by account (tasks without one are left out)")
    per_platform: list[GroupStats] = Field(description="by platform (tasks without one are left out)")
    per_type: list[GroupStats] = Field(description="by task type")
