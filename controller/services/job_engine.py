"""The rollout pass of jobs (docs/architecture.md#jobs), run by the holder of the `jobs` lease
(`controller.job_runner`). For each job that is due, in a transaction of its own:

1. start it (`scheduled` → `running`) once `run_at` came; a snapshot job fixes its targets then,
   a continuous one looks for new matching devices on every pass (`job_targets`, insert-ignore);
2. look at its ended runs: an abort rule that holds makes it `aborted`, and its runs that have
   not started are canceled (`task_control.cancel_task`, the operator's cancel);
3. create the next runs the rollout allows (`controller.services.rollout`) for its pending
   targets, in the order they joined: task rows with deterministic ids inserted with ON
   CONFLICT DO NOTHING, the targets marked, and the job's position moved by a compare-and-set
   UPDATE on its `version`; committed together, then published (runs of offline devices stay
   queued and go out on their next birth, like any task);
4. a snapshot job whose targets all have a run and whose runs all ended becomes `succeeded`,
   `failed` or `completed`; a continuous job runs until it is canceled.

A run counts against the rollout's rate when it is created, whether its device is online or
not: the rate bounds how fast work is issued, and a device that comes back later runs its run
then. Two controllers, or a restart in the middle of a pass, never create a run twice: the
lease makes one controller do passes, the version check makes a stale pass's commit fail
whole, and a run's id is its primary key.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import TypeAdapter
from sqlalchemy import and_, func, select, update
from sqlalchemy.orm import Session

from controller.models import Device, Job, JobTarget, Task
from controller.services import lifecycle, pacing, rollout, task_control, task_defaults
from controller.services.errors import ServiceError
from controller.services.publisher import Publisher
from controller.services.targets import select_devices
from controller.services.task_create import publish_task
from controller.services.task_rows import task_values
from controller.services.upsert import inserted_keys
from schemas.jobs import AbortRule, Rollout
from schemas.targets import Target

log = logging.getLogger(__name__)


ACTIVE = ("scheduled", "running", "paused")
RUN_ID_MAX = 128
_ROLLOUT: TypeAdapter[Rollout] = TypeAdapter(Rollout)
_RULES: TypeAdapter[list[AbortRule]] = TypeAdapter(list[AbortRule])
NOT_STARTED = [s.value for s in lifecycle.PENDING_STATUSES]
UNFINISHED = [s.value for s in lifecycle.UNFINISHED_STATUSES]


def run_id(job_id: str, device_id: str, account: str = "") -> str:
    """A run's task id: `<job>:<device>`, or `<job>:<device>:<account>` for a job over accounts (the
    account's sha256 prefix when its name does not fit a task id)."""
    if not account:
        return f"{job_id}:{device_id}"
    candidate = f"{job_id}:{device_id}:{account}"
    if len(candidate) <= RUN_ID_MAX and re.fullmatch(r"[A-Za-z0-9._:-]+", account):
        return candidate
    return f"{job_id}:{device_id}:{hashlib.sha256(account.encode()).hexdigest()[:16]}"


@dataclass
class PassResult:
    """What a pass did, for the caller to tell after the commits."""

    created: list[Task]
    ended: list[str]  # job ids that reached a final status


Tell = Callable[[Sequence[Task]], None]


def due_jobs(session: Session, now: datetime) -> list[str]:
    """Jobs a pass looks at: running ones, and scheduled ones whose time came."""
    query = select(Job.id).where(
        (Job.status == "running") | ((Job.status == "scheduled") & ((Job.run_at.is_(None)) | (Job.run_at <= now)))
    ).order_by(Job.created_at)
    ids = list(session.scalars(query))
    session.rollback()
    return ids


def run_pass(session: Session, publisher: Publisher, now: datetime, *, pass_interval: float, max_runs: int,
             tell: Tell | None = None) -> PassResult:
    """One pass over every due job; an error in one job is logged and leaves the others alone."""
    result = PassResult([], [])
    for job_id in due_jobs(session, now):
        try:
            advance(session, publisher, job_id, now, pass_interval=pass_interval, max_runs=max_runs, result=result)
        except Exception:
            session.rollback()
            log.exception("job %s: rollout pass failed; retried on the next pass", job_id)
    if tell is not None and result.created:
        tell(result.created)
    return result


def ended_runs(session: Session, job_id: str) -> tuple[dict[str, int], int]:
    """Ended runs by status (a run waiting for its retry is not ended) and the unfinished count."""
    ended: dict[str, int] = {}
    unfinished = 0
    rows = session.execute(
        select(Task.status, Task.retry_at.is_not(None), func.count()).where(Task.job_id == job_id)
        .group_by(Task.status, Task.retry_at.is_not(None))
    )
    for status, retrying, count in rows:
        if status in UNFINISHED or retrying:
            unfinished += count
        else:
            ended[status] = ended.get(status, 0) + count
    return ended, unfinished


def add_targets(session: Session, job: Job, now: datetime) -> int:
    """Record the devices (or device/account pairs) the job's target selects now; those already
    recorded are left alone. How many are new."""
    target = Target.model_validate(job.target)
    rows: list[dict[str, Any]] = []
    for device in select_devices(session, target):
        accounts = device.accounts if target.accounts is not None else [""]
        for account in accounts:
            rows.append(dict(job_id=job.id, device_id=device.id, account=account,
                             run_id=run_id(job.id, device.id, account), added_at=now, run_created_at=None))
    return len(inserted_keys(session, JobTarget, rows)) if rows else 0


def _cas(session: Session, job: Job, version: int | None = None, **values: Any) -> bool:
    """Change the job only if no other pass or operator changed it since it was read (at
    `version`, else the job's) and it is still scheduled or running; False: it was changed."""
    read = job.version if version is None else version
    result = session.execute(
        update(Job).where(Job.id == job.id, Job.version == read, Job.status.in_(("scheduled", "running")))
        .values(version=read + 1, updated_at=values.pop("updated_at"), **values)
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0))


def advance(session: Session, publisher: Publisher, job_id: str, now: datetime, *, pass_interval: float,
            max_runs: int, result: PassResult) -> None:
    """Steps 1–4 of the module docstring for one job."""
    job = session.get(Job, job_id, populate_existing=True)
    if job is None or job.status not in ("scheduled", "running"):
        session.rollback()
        return
    starting = job.status == "scheduled"
    if starting or job.mode == "continuous":
        added = add_targets(session, job, now)
        if added:  # idempotent rows of their own: committed apart from the rollout's step
            session.commit()
            log.info("job %s: %d new target(s)", job.id, added)
    ended, unfinished = ended_runs(session, job.id)
    reason = rollout.abort_reason(_RULES.validate_python(job.abort_rules or []), ended)
    if reason is not None:
        _abort(session, publisher, job, now, reason, result)
        return
    created = _create_runs(session, publisher, job, now, pass_interval, max_runs, unfinished, starting, result)
    if created is None:
        return
    _maybe_finish(session, job, now, ended, unfinished + len(created), result)


def _pending(session: Session, job: Job, limit: int) -> list[JobTarget]:
    return list(session.scalars(
        select(JobTarget).where(JobTarget.job_id == job.id, JobTarget.run_created_at.is_(None))
        .order_by(JobTarget.added_at, JobTarget.device_id, JobTarget.account).limit(limit)
    ))


def _pending_count(session: Session, job_id: str) -> int:
    return int(session.scalar(select(func.count()).select_from(JobTarget).where(
        JobTarget.job_id == job_id, JobTarget.run_created_at.is_(None))) or 0)


def _create_runs(session: Session, publisher: Publisher, job: Job, now: datetime, pass_interval: float,
                 max_runs: int, unfinished: int, starting: bool, result: PassResult) -> list[Task] | None:
    """Create what the rollout allows now and commit with the job's new position; the runs made
    (published), or None when another pass changed the job first (nothing done)."""
    expired = job.expires_at is not None and job.expires_at <= now
    wanted = 0 if expired else min(_pending_count(session, job.id), max_runs)
    plan = _ROLLOUT.validate_python(job.rollout) if job.rollout else None
    step = rollout.step(plan, created=job.runs_created, next_at=job.next_run_at, now=now, wanted=wanted,
                        unfinished=unfinished, slack=rollout.slack_for(plan, pass_interval))
    targets = _pending(session, job, step.count) if step.count else []
    rows = [_run_values(session, job, target, now) for target in targets]
    inserted = {key[0] for key in inserted_keys(session, Task, rows)} if rows else set()
    if targets:
        session.execute(
            update(JobTarget).where(JobTarget.job_id == job.id, JobTarget.run_id.in_([t.run_id for t in targets]))
            .values(run_created_at=now).execution_options(synchronize_session=False)
        )
    values: dict[str, Any] = dict(updated_at=now, next_run_at=step.next_at, runs_created=job.runs_created + len(rows))
    if starting:
        values.update(status="running", started_at=now)
    if not rows and not starting and step.next_at == job.next_run_at:
        session.rollback()
        return []
    if not _cas(session, job, **values):
        session.rollback()
        log.info("job %s changed under this pass; its runs are left to the next one", job.id)
        return None
    session.commit()
    runs = [Task(**row) for row in rows if row["id"] in inserted]
    _publish(session, publisher, runs)
    result.created.extend(runs)
    if runs:
        log.info("job %s: %d run(s) created (%d in all)", job.id, len(runs), job.runs_created + len(rows))
    return runs


def _run_values(session: Session, job: Job, target: JobTarget, now: datetime) -> dict[str, Any]:
    """A run's task row; an account's pacing rule may hold it back (docs/architecture.md#schedules)."""
    account = target.account or job.account
    paced = pacing.paced_run_at(session, account, job.type, now, now)
    run_at = paced if paced is not None and paced > now else None
    start = run_at or now
    default = task_defaults.default_for(job.type)  # FLEET_TASK_DEFAULTS: no run waits or runs for ever
    expires = start + timedelta(seconds=job.ttl if job.ttl is not None else default.ttl)
    if job.ttl is None and job.expires_at is not None:
        expires = job.expires_at
    timeout = job.timeout if job.timeout is not None else default.timeout
    return task_values(
        id=target.run_id, device_id=target.device_id, type=job.type, account=account, params=job.params,
        origin="job", job_id=job.id, created_at=now, expires_at=expires, timeout=timeout,
        max_retries=job.max_retries, retry_backoff=job.retry_backoff, run_at=run_at,
    )


def _publish(session: Session, publisher: Publisher, runs: list[Task]) -> None:
    """Send the runs of online devices; the others go out on their devices' next births."""
    if not runs:
        return
    online = set(session.scalars(select(Device.id).where(
        Device.id.in_({run.device_id for run in runs}), Device.status == "online")))
    session.rollback()
    for run in runs:
        if run.device_id in online:
            publish_task(run, publisher)


def _maybe_finish(session: Session, job: Job, now: datetime, ended: dict[str, int], unfinished: int,
                  result: PassResult) -> None:
    """A snapshot job is over once no target waits for a run (or the job expired) and no run is unfinished."""
    if job.mode != "snapshot" or unfinished:
        return
    fresh = session.get(Job, job.id, populate_existing=True)
    if fresh is None or fresh.status != "running":
        session.rollback()
        return
    expired = fresh.expires_at is not None and fresh.expires_at <= now
    if _pending_count(session, job.id) and not expired:
        session.rollback()
        return
    status = rollout.final_status(ended)
    if _cas(session, fresh, status=status, finished_at=now, updated_at=now):
        session.commit()
        result.ended.append(job.id)
        log.info("job %s %s: %s", job.id, status, ended)
    else:
        session.rollback()


def _abort(session: Session, publisher: Publisher, job: Job, now: datetime, reason: str, result: PassResult) -> None:
    """Cancel the runs that have not started, then mark the job aborted: whoever sees `aborted`
    sees them canceled. A pass cut short in between aborts on the next one (the rule still
    holds: canceled runs do not count in abort rules)."""
    version = job.version  # as read: a rollback makes the session read it again
    session.rollback()
    cancel_not_started(session, publisher, job.id)
    if not _cas(session, job, version, status="aborted", abort_reason=reason, finished_at=now, updated_at=now):
        session.rollback()
        return
    session.commit()
    log.warning("job %s aborted: %s", job.id, reason)
    result.ended.append(job.id)


def cancel_not_started(session: Session, publisher: Publisher, job_id: str) -> list[str]:
    """Cancel the job's runs that have not started (queued, dispatched, or waiting for a retry)
    through the operator's cancel path; runs already on their way are left to end."""
    ids = list(session.scalars(select(Task.id).where(
        Task.job_id == job_id,
        (Task.status.in_(NOT_STARTED)) | and_(Task.retry_at.is_not(None), Task.status.not_in(UNFINISHED)),
    ).order_by(Task.id)))
    session.rollback()
    canceled = []
    for task_id in ids:
        try:
            task_control.cancel_task(session, task_id, publisher)
            canceled.append(task_id)
        except ServiceError as exc:  # it started or ended meanwhile
            session.rollback()
            log.info("job %s: run %s not canceled: %s", job_id, task_id, exc.detail)
    if canceled:
        log.info("job %s: %d run(s) that had not started canceled", job_id, len(canceled))
    return canceled
