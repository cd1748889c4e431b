"""Jobs in the controller's services on a real SQLite database (the MQTT publish side stood in
for): the rollout pass creates runs at the rollout's pace, never twice, aborts and cancels what
has not started, and a continuous job picks up devices that join its target."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from controller.job_runner import JobRunner
from controller.models import Job, Task
from controller.services import accounts, bulk_cancel, devices, job_engine, jobs, task_defaults, tasks
from controller.services.errors import ConflictError, InvalidRequestError
from schemas.api import AccountCreate
from schemas.common import utcnow
from schemas.events import EventKind
from schemas.housekeeping import TaskCancelFilter
from schemas.jobs import JobCreate
from tests.services_kit import ADMIN_TOKEN, FakePublisher, event, go_online, will


def _create(sessions: sessionmaker[Session], publisher: FakePublisher, **body: object) -> str:
    with sessions() as session:
        job = jobs.stage_job(session, JobCreate.model_validate({"type": "echo", **body}), publisher)
        session.commit()
        return job.id


def _pass(sessions: sessionmaker[Session], publisher: FakePublisher, at: float, t0: datetime) -> job_engine.PassResult:
    with sessions() as session:
        return job_engine.run_pass(session, publisher, t0 + timedelta(seconds=at), pass_interval=0.25, max_runs=100)


def _runs(sessions: sessionmaker[Session], job_id: str) -> dict[str, str]:
    with sessions() as session:
        return {t.device_id: t.status for t in session.scalars(select(Task).where(Task.job_id == job_id))}


def test_rate_rollout_creates_runs_at_its_pace_once_each_and_finishes(
    sessions: sessionmaker[Session], publisher: FakePublisher
) -> None:
    for device_id in ("pc-01", "pc-02", "pc-03"):
        go_online(sessions, device_id)
    with sessions() as session:
        devices.apply_status(session, "pc-03", will("pc-03", "s1"))
    job_id = _create(sessions, publisher, target={"device_ids": ["pc-01", "pc-02", "pc-03"]},
                     rollout={"kind": "rate", "per_minute": 60})
    t0 = utcnow()
    assert [r.id for r in _pass(sessions, publisher, 0, t0).created] == [f"{job_id}:pc-01"]
    assert _pass(sessions, publisher, 0.5, t0).created == []  # too early for the next
    assert _pass(sessions, publisher, 0.5, t0).created == []
    assert [r.id for r in _pass(sessions, publisher, 1.0, t0).created] == [f"{job_id}:pc-02"]
    assert [r.id for r in _pass(sessions, publisher, 2.0, t0).created] == [f"{job_id}:pc-03"]
    assert [topic for topic, _ in publisher.sent] == ["devices/pc-01/tasks", "devices/pc-02/tasks"]  # pc-03 offline
    with sessions() as session:
        out = jobs.get_job(session, job_id)
    assert out.status == "running" and out.progress is not None
    assert (out.progress.runs, out.progress.pending_targets, out.progress.by_status) == (3, 0, {"queued": 3})

    with sessions() as session:
        for device_id in ("pc-01", "pc-02", "pc-03"):
            tasks.record_event(session, device_id, event(f"{job_id}:{device_id}", device_id, EventKind.SUCCEEDED, 1))
    assert _pass(sessions, publisher, 3.0, t0).ended == [job_id]
    with sessions() as session:
        out = jobs.get_job(session, job_id)
    assert out.status == "succeeded" and out.progress is not None and out.progress.success_rate == 1.0


def test_abort_rule_stops_the_job_and_cancels_runs_that_had_not_started(
    sessions: sessionmaker[Session], publisher: FakePublisher
) -> None:
    go_online(sessions, "pc-01")
    go_online(sessions, "pc-02")
    go_online(sessions, "pc-09")
    with sessions() as session:
        devices.apply_status(session, "pc-01", will("pc-01", "s1"))  # its run stays queued
    job_id = _create(sessions, publisher, target={"all": True}, abort=[{"on": "failed", "count": 1}])
    t0 = utcnow()
    assert len(_pass(sessions, publisher, 0, t0).created) == 3
    with sessions() as session:
        tasks.record_event(session, "pc-02", event(f"{job_id}:pc-02", "pc-02", EventKind.STARTED, 0))
        tasks.record_event(session, "pc-09", event(f"{job_id}:pc-09", "pc-09", EventKind.FAILED, 1,
                                                   error={"code": "boom", "message": "no"}))
    assert _pass(sessions, publisher, 1, t0).ended == [job_id]
    assert _runs(sessions, job_id) == {"pc-01": "canceled", "pc-02": "running", "pc-09": "failed"}
    with sessions() as session:
        out = jobs.get_job(session, job_id)
        assert out.status == "aborted" and out.abort_reason is not None and "1 of 1 ended runs failed" in out.abort_reason
        with pytest.raises(ConflictError, match="aborted"):
            jobs.cancel_job(session, job_id, publisher)


def test_continuous_job_runs_on_devices_that_join_and_pause_cancel(
    sessions: sessionmaker[Session], publisher: FakePublisher
) -> None:
    go_online(sessions, "pc-01", groups=["eu"])
    job_id = _create(sessions, publisher, target={"groups": ["eu"]}, mode="continuous")
    t0 = utcnow()
    _pass(sessions, publisher, 0, t0)
    go_online(sessions, "pc-02", groups=["eu"])
    go_online(sessions, "pc-03", groups=["us"])
    assert [r.device_id for r in _pass(sessions, publisher, 1, t0).created] == ["pc-02"]
    with sessions() as session:
        assert jobs.pause_job(session, job_id).status == "paused"
    go_online(sessions, "pc-04", groups=["eu"])
    assert _pass(sessions, publisher, 2, t0).created == []  # paused
    with sessions() as session:
        assert jobs.resume_job(session, job_id).status == "running"
    assert [r.device_id for r in _pass(sessions, publisher, 3, t0).created] == ["pc-04"]
    with sessions() as session:
        out = jobs.cancel_job(session, job_id, publisher)
    assert out.status == "canceled"
    assert set(_runs(sessions, job_id).values()) == {"canceled"}


def test_bad_jobs_are_refused_with_a_reason(sessions: sessionmaker[Session], publisher: FakePublisher) -> None:
    with pytest.raises(InvalidRequestError, match="not both"):
        _create(sessions, publisher, account="a1", target={"accounts": ["a1"]})
    with pytest.raises(InvalidRequestError, match="not built in"):
        _create(sessions, publisher, type="nope", target={"all": True})
    with pytest.raises(ValueError, match="name the devices"):
        JobCreate.model_validate({"type": "echo", "target": {}})
    job_id = _create(sessions, publisher, target={"all": True}, run_at=(utcnow() + timedelta(hours=1)).isoformat())
    assert _pass(sessions, publisher, 0, utcnow()).created == []
    with sessions() as session:
        assert jobs.get_job(session, job_id).status == "scheduled"


def test_the_jobs_routes_answer_repeats_once_and_say_what_is_wrong(client: TestClient) -> None:
    body = {"type": "ping", "target": {"all": True}, "rollout": {"kind": "batches", "size": 5, "pause": 60}}
    first = client.post("/api/v1/jobs", json=body, headers={"Idempotency-Key": "job-key-1"})
    again = client.post("/api/v1/jobs", json=body, headers={"Idempotency-Key": "job-key-1"})
    assert first.status_code == again.status_code == 201, first.text
    assert again.json()["id"] == first.json()["id"] and again.headers.get("Idempotent-Replayed") == "true"
    assert client.get("/api/v1/jobs").json()["total"] == 1
    job_id = first.json()["id"]
    shown = client.get(f"/api/v1/jobs/{job_id}").json()
    assert shown["progress"]["runs"] == 0 and shown["rollout"]["size"] == 5
    assert client.get("/api/v1/jobs/nope").status_code == 404
    refused = client.post(f"/api/v1/jobs/{job_id}/resume")
    assert refused.status_code == 409 and "only a job that is paused" in refused.json()["detail"]
    bad = client.post("/api/v1/jobs", json={**body, "rollout": {"kind": "rate", "per_minute": 0}})
    assert bad.status_code == 422 and "per_minute" in bad.text
    assert client.post(f"/api/v1/jobs/{job_id}/cancel").json()["status"] == "canceled"


def test_the_jobs_pages_show_progress_and_pause_resume_cancel(client: TestClient) -> None:
    from tests.unit.test_dashboard_pages import _signed_in

    job = client.post("/api/v1/jobs", json={"type": "ping", "target": {"all": True}, "name": "nightly ping"}).json()
    browser = _signed_in(client, ADMIN_TOKEN)
    listed = browser.get("/jobs")
    assert listed.status_code == 200 and "nightly ping" in listed.text and f"/jobs/{job['id']}" in listed.text
    assert browser.get("/jobs?status=bogus").status_code == 422
    browser.cookies.set("fleet_lang", "zh_CN")
    page = browser.get(f"/jobs/{job['id']}")
    assert page.status_code == 200 and "已计划" in page.text and 'id="pause-job"' in page.text
    csrf = browser.cookies["fleet_csrf"]
    assert browser.post(f"/jobs/{job['id']}/pause", data={"csrf_token": csrf}).status_code == 303
    assert 'id="resume-job"' in browser.get(f"/jobs/{job['id']}").text
    assert browser.post(f"/jobs/{job['id']}/resume", data={"csrf_token": csrf}).status_code == 303
    assert browser.post(f"/jobs/{job['id']}/cancel", data={"csrf_token": csrf}).status_code == 303
    assert client.get(f"/api/v1/jobs/{job['id']}").json()["status"] == "canceled"
    assert browser.get("/jobs/nope").status_code == 404


def test_a_stale_pass_creates_nothing_twice(sessions: sessionmaker[Session], publisher: FakePublisher) -> None:
    """Two controllers (or a pass from before a lease hand-over): the one that read the job before
    the other moved it fails its compare-and-set and leaves no run, no mark and no publish."""
    for device_id in ("pc-01", "pc-02", "pc-03"):
        go_online(sessions, device_id)
    job_id = _create(sessions, publisher, target={"all": True}, rollout={"kind": "rate", "per_minute": 60})
    t0 = utcnow()
    _pass(sessions, publisher, 0, t0)  # starts it: pc-01's run
    with sessions() as stale_session:
        stale = stale_session.get(Job, job_id)
        assert stale is not None and stale.runs_created == 1
        stale_session.expunge(stale)  # what the slow controller read
    assert [r.device_id for r in _pass(sessions, publisher, 1, t0).created] == ["pc-02"]  # the other one moved on
    sent = len(publisher.sent)
    with sessions() as stale_session:
        made = job_engine._create_runs(stale_session, publisher, stale, t0 + timedelta(seconds=1), 0.25, 100, 0,
                                       False, job_engine.PassResult([], []))
    assert made is None and len(publisher.sent) == sent  # it would have made pc-03's run: rolled back
    with sessions() as session:
        runs = list(session.scalars(select(Task.id).where(Task.job_id == job_id)))
        job = session.get(Job, job_id)
        assert job is not None and (job.runs_created, job.version) == (2, 2)
    assert sorted(runs) == [f"{job_id}:pc-01", f"{job_id}:pc-02"]


def test_a_job_over_accounts_makes_one_run_per_account_acting_for_it(
    sessions: sessionmaker[Session], publisher: FakePublisher
) -> None:
    go_online(sessions, "pc-01")
    go_online(sessions, "pc-02")
    with sessions() as session:
        for name, device_id in (("shop.a", "pc-01"), ("李雷@douyin", "pc-01"), ("shop.c", "pc-02"), ("other", "pc-02")):
            accounts.create_account(session, AccountCreate(name=name, platform="douyin", device_id=device_id))
    job_id = _create(sessions, publisher, target={"accounts": ["shop.a", "李雷@douyin", "shop.c"]})
    created = _pass(sessions, publisher, 0, utcnow()).created
    hashed = f"{job_id}:pc-01:{hashlib.sha256('李雷@douyin'.encode()).hexdigest()[:16]}"
    assert sorted((run.id, run.account) for run in created) == sorted([
        (f"{job_id}:pc-01:shop.a", "shop.a"), (hashed, "李雷@douyin"), (f"{job_id}:pc-02:shop.c", "shop.c"),
    ])
    assert {envelope.account for _topic, envelope in publisher.sent} == {"shop.a", "李雷@douyin", "shop.c"}


def test_the_runner_tells_the_push_stream_of_the_runs_it_creates(
    sessions: sessionmaker[Session], publisher: FakePublisher
) -> None:
    """Runs are inserted in bulk, out of the session hooks' sight: the runner publishes them."""
    told: list[object] = []

    class Bus:
        def publish(self, events: list[object]) -> None:
            told.extend(events)

    go_online(sessions, "pc-01")
    job_id = _create(sessions, publisher, target={"device_ids": ["pc-01"]})
    runner = JobRunner(sessions, publisher, interval=0.25, max_runs=10, holder="test", lease_seconds=5,
                       live=Bus())  # type: ignore[arg-type]
    runner._pass()
    assert [(e.task_id, e.device_id, e.status.value) for e in told] == [(f"{job_id}:pc-01", "pc-01", "queued")]  # type: ignore[attr-defined]


def test_bulk_cancel_by_job_id_and_runs_take_the_types_defaults(
    sessions: sessionmaker[Session], publisher: FakePublisher
) -> None:
    """A job's runs are canceled by `POST /api/v1/tasks/cancel {"job_id": …}` and no other task is;
    a run created without ttl/timeout gets its type's defaults (FLEET_TASK_DEFAULTS)."""
    for device_id in ("pc-01", "pc-02"):
        go_online(sessions, device_id)
    job_id = _create(sessions, publisher, target={"device_ids": ["pc-01", "pc-02"]})
    other = _create(sessions, publisher, target={"device_ids": ["pc-01"]})
    t0 = utcnow()
    _pass(sessions, publisher, 0, t0)
    default = task_defaults.default_for("echo")
    with sessions() as session:
        run = session.get(Task, f"{job_id}:pc-01")
        assert run is not None and run.timeout == default.timeout
        assert run.expires_at is not None and abs((run.expires_at - run.created_at).total_seconds() - default.ttl) < 1
        answer = bulk_cancel.cancel_matching(session, TaskCancelFilter(job_id=job_id), publisher)
    assert answer.count == 2 and sorted(answer.task_ids) == [f"{job_id}:pc-01", f"{job_id}:pc-02"]
    assert set(_runs(sessions, job_id).values()) == {"canceled"}
    assert set(_runs(sessions, other).values()) != {"canceled"}, "another job's run is left alone"
