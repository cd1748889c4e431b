"""Tables of work the controller runs by itself: schedules, pacing, jobs and their targets, and
releases of the device daemon."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Float, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from controller.models.base import ID_LENGTH, Base
from schemas.common import utcnow


class Schedule(Base):
    """A recurring task or broadcast (docs/architecture.md#schedules): a cron expression read in
    an IANA time zone, and what to create at each fire time (`action`, a validated
    `schemas.schedules.ScheduleAction` as JSON). `next_run_at` is the slot due next; the
    sweeping controller moves it on with a compare-and-set UPDATE, so a slot fires once."""

    __tablename__ = "schedules"
    __table_args__ = (Index("ix_schedules_due", "enabled", "next_run_at"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    cron: Mapped[str] = mapped_column(String(200))
    timezone: Mapped[str] = mapped_column(String(64))
    action: Mapped[dict[str, Any]]
    enabled: Mapped[bool] = mapped_column(default=True)
    next_run_at: Mapped[datetime | None]
    last_run_at: Mapped[datetime | None]  # the slot that fired last
    last_fired_at: Mapped[datetime | None]  # when it fired (a missed slot fires late)
    last_result: Mapped[str | None] = mapped_column(String(ID_LENGTH))  # the task or broadcast id created
    last_error: Mapped[str | None] = mapped_column(String(400))
    skipped: Mapped[int] = mapped_column(default=0)  # missed slots never fired, in all
    last_skip: Mapped[str | None] = mapped_column(String(400))  # what was skipped last, and why
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class PacingRule(Base):
    """At least `interval` seconds (plus up to `jitter`, at random) between the tasks of one
    type of one account; account `*` is every account without a rule of its own."""

    __tablename__ = "pacing_rules"

    account: Mapped[str] = mapped_column(String(200), primary_key=True)
    task_type: Mapped[str] = mapped_column(String(64), primary_key=True)
    interval: Mapped[float] = mapped_column(Float)
    jitter: Mapped[float] = mapped_column(Float, default=0.0)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class PacingSlot(Base):
    """The `run_at` given to the latest paced task of (account, type): the next one goes at
    least a rule's interval after it. Locked while a create computes its slot."""

    __tablename__ = "pacing_slots"

    account: Mapped[str] = mapped_column(String(200), primary_key=True)
    task_type: Mapped[str] = mapped_column(String(64), primary_key=True)
    last_run_at: Mapped[datetime]
    last_sent_at: Mapped[datetime | None]  # when the latest paced task was published (release spacing)


class Job(Base):
    """One task definition run over a target, with a rollout, abort rules and a mode
    (docs/architecture.md#jobs). Its runs are `Task` rows with `job_id`; where the rollout stands
    (`runs_created`, `next_run_at`) lives here, changed only by compare-and-set on `version`."""

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str | None] = mapped_column(String(200))
    type: Mapped[str] = mapped_column(String(64))
    account: Mapped[str | None] = mapped_column(String(200))
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    target: Mapped[dict[str, Any]]
    rollout: Mapped[dict[str, Any] | None]
    abort_rules: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    mode: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), index=True)
    abort_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    run_at: Mapped[datetime | None]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    expires_at: Mapped[datetime | None]
    ttl: Mapped[float | None] = mapped_column(Float)
    timeout: Mapped[float | None] = mapped_column(Float)
    max_retries: Mapped[int] = mapped_column(default=0)
    retry_backoff: Mapped[float] = mapped_column(Float, default=5.0)
    next_run_at: Mapped[datetime | None]
    runs_created: Mapped[int] = mapped_column(default=0)
    version: Mapped[int] = mapped_column(default=0)


class JobTarget(Base):
    """A device (and account, for a job over accounts; else '') a job addresses, and whether its
    run was created yet: the job's pending targets are the rows without `run_created_at`."""

    __tablename__ = "job_targets"
    __table_args__ = (Index("ix_job_targets_pending", "job_id", "run_created_at"),)

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    device_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    account: Mapped[str] = mapped_column(String(200), primary_key=True, default="")
    run_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    added_at: Mapped[datetime] = mapped_column(default=utcnow)
    run_created_at: Mapped[datetime | None]


class Release(Base):
    """A signed release of the device daemon (docs/architecture.md#remote-update): a wheel kept in
    the file store (`file_id`) and the operator's Ed25519 signature over its version, sha256 and
    file name, which devices check again before they install it."""

    __tablename__ = "releases"

    version: Mapped[str] = mapped_column(String(64), primary_key=True)
    file_id: Mapped[str] = mapped_column(ForeignKey("files.id"))
    file_name: Mapped[str] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    signature: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
