"""Jobs as the REST API sees them (docs/architecture.md#jobs): create (idempotently), read with
progress, list, list runs, cancel, pause, resume. The runs themselves are created by the rollout
pass (`controller.services.job_engine`); every status change here is a compare-and-set UPDATE,
so an operator's cancel and a pass finishing the job at the same moment cannot both win.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from controller.models import Job, JobTarget, Task
from controller.services import idempotency, job_engine, rollout
from controller.services.broadcasts import check_type
from controller.services.errors import ConflictError, InvalidRequestError, NotFoundError
from controller.services.idempotency import Answer, Claim, Staged
from controller.services.publisher import Publisher
from controller.services.targets import select_devices
from controller.services.task_create import check_size
from schemas.common import new_id, utcnow
from schemas.events import TaskStatus
from schemas.jobs import JobCreate, JobOut, JobPage, JobProgress
from schemas.tasks import TaskEnvelope

log = logging.getLogger(__name__)


def _check(session: Session, body: JobCreate, publisher: Publisher, now: datetime) -> None:
    if body.account is not None and body.target.accounts is not None:
        raise InvalidRequestError("give either account (every run acts for it) or target.accounts (one run per "
                                  "account, acting for it), not both")
    if body.expires_at is not None and body.expires_at <= now:
        raise InvalidRequestError("expires_at is in the past; give a future time or a ttl in seconds")
    if body.run_at is not None and body.expires_at is not None and body.expires_at <= body.run_at:
        raise InvalidRequestError("expires_at is before run_at: the job would never run; move one of them")
    check_type(session, body.type, body.params)
    select_devices(session, body.target)  # a wrong tag expression is refused now, not at start
    sample = TaskEnvelope(id="j" * job_engine.RUN_ID_MAX, type=body.type, account=body.account, params=body.params,
                          created_at=now, expires_at=body.expires_at, timeout=body.timeout)
    check_size(sample, publisher)


def stage_job(session: Session, body: JobCreate, publisher: Publisher, job_id: str | None = None) -> Job:
    """Add (and flush) a checked job; the rollout pass starts it (at `run_at`, or at once).
    `job_id`: a schedule's `<schedule id>-<slot>`, else a fresh id."""
    now = utcnow()
    _check(session, body, publisher, now)
    job = Job(
        id=job_id or new_id(), name=body.name, type=body.type, account=body.account, params=body.params,
        target=body.target.model_dump(mode="json", exclude_none=True),
        rollout=body.rollout.model_dump(mode="json") if body.rollout else None,
        abort_rules=[rule.model_dump(mode="json") for rule in body.abort], mode=body.mode, status="scheduled",
        created_at=now, updated_at=now, run_at=body.run_at, expires_at=body.expires_at, ttl=body.ttl,
        timeout=body.timeout, max_retries=body.retries, retry_backoff=body.retry_backoff, runs_created=0, version=0,
    )
    session.add(job)
    session.flush()
    return job


def create_job_once(session: Session, body: JobCreate, publisher: Publisher, claim: Claim | None, ttl: float) -> Answer:
    """Create a job; a request repeated with the same `Idempotency-Key` answers the first answer."""

    def stage() -> Staged:
        job = stage_job(session, body, publisher)

        def committed() -> None:
            log.info("job %s (%s, %s) created over %s", job.id, job.type, job.mode, job.target)

        return Answer(201, job_out(session, job).model_dump(mode="json")), committed

    return idempotency.create_once(session, claim, ttl, stage)


def progress(session: Session, job_id: str) -> JobProgress:
    by_status = {status: count for status, count in session.execute(
        select(Task.status, func.count()).where(Task.job_id == job_id).group_by(Task.status))}
    ended_counts, _unfinished = job_engine.ended_runs(session, job_id)
    targets, pending = session.execute(
        select(func.count(), func.count().filter(JobTarget.run_created_at.is_(None))).where(JobTarget.job_id == job_id)
    ).one()
    ended = sum(ended_counts.get(status, 0) for status in rollout.ENDED)
    return JobProgress(
        runs=sum(by_status.values()), targets=int(targets), pending_targets=int(pending), by_status=by_status,
        ended=ended, succeeded=by_status.get("succeeded", 0), success_rate=rollout.success_rate(ended_counts),
    )


def job_out(session: Session, job: Job, with_progress: bool = True) -> JobOut:
    out = JobOut(
        id=job.id, name=job.name, type=job.type, account=job.account, params=job.params, target=job.target,
        rollout=job.rollout, abort=job.abort_rules or [], mode=job.mode,  # type: ignore[arg-type]
        status=job.status,  # type: ignore[arg-type]
        abort_reason=job.abort_reason, created_at=job.created_at, run_at=job.run_at, started_at=job.started_at,
        finished_at=job.finished_at, next_run_at=job.next_run_at,
    )
    if with_progress:
        out.progress = progress(session, job.id)
    return out


def _job(session: Session, job_id: str) -> Job:
    job = session.get(Job, job_id, populate_existing=True)
    if job is None:
        raise NotFoundError(f"job {job_id!r} does not exist; list jobs with GET /api/v1/jobs")
    return job


def get_job(session: Session, job_id: str) -> JobOut:
    return job_out(session, _job(session, job_id))


def list_jobs(session: Session, status: str | None, limit: int, offset: int) -> JobPage:
    query = select(Job)
    if status is not None:
        query = query.where(Job.status == status)
    total = int(session.scalar(select(func.count()).select_from(query.subquery())) or 0)
    jobs = session.scalars(query.order_by(Job.created_at.desc(), Job.id).limit(limit).offset(offset))
    return JobPage(items=[job_out(session, job, with_progress=False) for job in jobs], total=total, limit=limit,
                   offset=offset)


def list_runs(session: Session, job_id: str, status: TaskStatus | None, limit: int, offset: int
              ) -> tuple[list[Task], int]:
    _job(session, job_id)
    query = select(Task).where(Task.job_id == job_id)
    if status is not None:
        query = query.where(Task.status == status.value)
    total = int(session.scalar(select(func.count()).select_from(query.subquery())) or 0)
    return list(session.scalars(query.order_by(Task.created_at, Task.id).limit(limit).offset(offset))), total


def _move(session: Session, job_id: str, allowed: tuple[str, ...], verb: str, **values: object) -> Job:
    """Compare-and-set the job's status; a 409 naming its status when it is not in `allowed`."""
    now = utcnow()
    job = _job(session, job_id)
    result = session.execute(
        update(Job).where(Job.id == job_id, Job.status.in_(allowed))
        .values(version=Job.version + 1, updated_at=now, **values).execution_options(synchronize_session=False)
    )
    if not getattr(result, "rowcount", 0):
        session.rollback()
        raise ConflictError(f"job {job_id!r} is {job.status}; only a job that is {' or '.join(allowed)} can be {verb}")
    session.commit()
    return _job(session, job_id)


def cancel_job(session: Session, job_id: str, publisher: Publisher) -> JobOut:
    """Stop the rollout and cancel the runs that have not started; running ones are left to end."""
    _move(session, job_id, job_engine.ACTIVE, "canceled", status="canceled", finished_at=utcnow())
    canceled = job_engine.cancel_not_started(session, publisher, job_id)
    log.info("job %s canceled by operator (%d run(s) canceled)", job_id, len(canceled))
    return get_job(session, job_id)


def pause_job(session: Session, job_id: str) -> JobOut:
    """No new runs until resumed; runs already created go on."""
    _move(session, job_id, ("scheduled", "running"), "paused", status="paused")
    return get_job(session, job_id)


def resume_job(session: Session, job_id: str) -> JobOut:
    """Back to running (or scheduled, if it never started); the rate starts afresh, with no burst."""
    job = _job(session, job_id)
    status = "running" if job.started_at is not None else "scheduled"
    _move(session, job_id, ("paused",), "resumed", status=status)
    return get_job(session, job_id)
