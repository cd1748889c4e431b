"""Jobs: one task definition run over a target of devices, with a rollout, abort rules and a
mode (docs/architecture.md#jobs). The REST bodies of `/api/v1/jobs`.

A job's runs are ordinary tasks named `<job id>:<device id>` (or `<job id>:<device>:<account>`
when the target selects accounts: one run per account), created by the controller's rollout
pass as fast as the rollout allows:

- no rollout: every target at once;
- `rate`: at most `per_minute` runs created per minute, evenly spaced;
- `exponential`: `start_per_minute`, multiplied by `factor` each time a minute's worth of runs
  was created at the current rate, up to `max_per_minute`;
- `batches`: `size` runs at once, then `pause` seconds (after the batch was created, or, with
  `wait`, after its last run ended) before the next batch.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.api import TaskOptions
from schemas.common import StrictModel, TaskType, UtcDatetime
from schemas.targets import Target

JobMode = Literal["snapshot", "continuous"]
JobStatus = Literal["scheduled", "running", "paused", "succeeded", "failed", "completed", "aborted", "canceled"]
JOB_FINAL_STATUSES: tuple[JobStatus, ...] = ("succeeded", "failed", "completed", "aborted", "canceled")
AbortOn = Literal["failed", "timed_out", "failed_or_timed_out"]
MAX_PER_MINUTE = 100_000.0


class RateRollout(StrictModel):
    """At most `per_minute` runs created per minute, one every 60/per_minute seconds."""

    kind: Literal["rate"] = "rate"
    per_minute: float = Field(gt=0, le=MAX_PER_MINUTE, description="runs created per minute at most")


class ExponentialRollout(StrictModel):
    """A rate that starts at `start_per_minute` and grows by `factor` each time a minute's worth of
    runs was created at the current rate, until `max_per_minute`."""

    kind: Literal["exponential"] = "exponential"
    start_per_minute: float = Field(gt=0, le=MAX_PER_MINUTE, description="the first rate, runs per minute")
    factor: float = Field(gt=1, le=100, description="what the rate is multiplied by at each step")
    max_per_minute: float = Field(MAX_PER_MINUTE, gt=0, le=MAX_PER_MINUTE, description="the rate never goes past this")

    @model_validator(mode="after")
    def _ordered(self) -> "ExponentialRollout":
        if self.max_per_minute < self.start_per_minute:
            raise ValueError("max_per_minute must be at least start_per_minute")
        return self


class BatchRollout(StrictModel):
    """`size` runs at once, then a pause of `pause` seconds before the next batch."""

    kind: Literal["batches"] = "batches"
    size: int = Field(ge=1, le=100_000, description="runs per batch")
    pause: float = Field(0.0, ge=0, le=7 * 86_400, description="seconds between two batches")
    wait: bool = Field(False, description="count the pause from the end of the batch's last run, not from its start")


Rollout = Annotated[RateRollout | ExponentialRollout | BatchRollout, Field(discriminator="kind")]


class AbortRule(StrictModel):
    """Abort the job once `on` runs reach `count`, or `percent` of the ended runs, after at least
    `min_runs` runs ended. `failed` counts failed and rejected runs."""

    on: AbortOn = Field("failed_or_timed_out", description="which ended runs count")
    count: int | None = Field(None, ge=1, le=10_000_000, description="abort once this many runs count")
    percent: float | None = Field(None, gt=0, le=100, description="abort once this share of the ended runs count")
    min_runs: int = Field(1, ge=1, le=10_000_000, description="ended runs needed before the rule is looked at")

    @model_validator(mode="after")
    def _threshold(self) -> "AbortRule":
        if self.count is None and self.percent is None:
            raise ValueError("give a threshold: count, percent, or both")
        return self


class JobCreate(TaskOptions):
    """`POST /api/v1/jobs`: a task definition (type, params, account, timeout, ttl/expires_at,
    retries) over a `target`. `ttl` is counted from each run's creation; `expires_at` ends the job's
    not-yet-started runs at that time."""

    type: TaskType
    target: Target
    rollout: Rollout | None = Field(None, description="how fast runs are created; all at once when absent")
    abort: list[AbortRule] = Field(default_factory=list, max_length=10, description="abort rules, any of which stops the job")
    mode: JobMode = Field("snapshot", description="snapshot: the target's devices when the job starts; continuous: also "
                          "devices that match it later (the job runs until canceled)")
    run_at: UtcDatetime | None = Field(None, description="start the rollout at this time instead of now")
    name: str | None = Field(None, min_length=1, max_length=200, description="a label for people")


class JobProgress(BaseModel):
    """Where a job stands: its runs by status and what is left."""

    runs: int = Field(description="runs created so far (the rollout's position)")
    targets: int = Field(description="devices (or device/account pairs) the job addresses so far")
    pending_targets: int = Field(description="targets still waiting for their run")
    by_status: dict[str, int] = Field(description="runs per task status")
    ended: int
    succeeded: int
    success_rate: float | None = Field(description="succeeded / ended runs, None before any ended")


class JobOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str | None
    type: str
    account: str | None
    params: dict[str, Any]
    target: dict[str, Any]
    rollout: dict[str, Any] | None
    abort: list[dict[str, Any]]
    mode: JobMode
    status: JobStatus
    abort_reason: str | None
    created_at: UtcDatetime
    run_at: UtcDatetime | None
    started_at: UtcDatetime | None
    finished_at: UtcDatetime | None
    next_run_at: UtcDatetime | None = Field(description="the earliest time the rollout creates its next run")
    progress: JobProgress | None = None


class JobPage(BaseModel):
    items: list[JobOut]
    total: int
    limit: int
    offset: int
