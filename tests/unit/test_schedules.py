"""run_at, pacing and cron schedules in the controller's services on a real SQLite database,
with an in-memory stand-in for the MQTT publish side only (docs/architecture.md#schedules)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from controller.models import Job, Schedule, Task
from controller.services import (
    accounts,
    broadcasts,
    devices,
    job_engine,
    pacing,
    schedule_fire,
    schedules,
    sweeper,
    task_control,
    task_create,
)
from controller.services.errors import ConflictError, InvalidRequestError
from schemas.api import AccountCreate, BroadcastCreate, TaskCreate
from schemas.common import utcnow
from schemas.schedules import PacingRuleIn, ScheduleCreate
from tests.services_kit import ADMIN_TOKEN, FakePublisher, go_online, will

UTC = timezone.utc


def _sent_ids(publisher: FakePublisher) -> list[str]:
    return [envelope.id or "" for _topic, envelope in publisher.sent]


def test_a_run_at_task_waits_queued_and_is_released_when_due(
    sessions: sessionmaker[Session], publisher: FakePublisher
) -> None:
    go_online(sessions, "pc-01")
    now = utcnow()
    with sessions() as session:
        task = task_create.create_task(
            session, TaskCreate(device_id="pc-01", type="ping", run_at=now + timedelta(seconds=30), ttl=60), publisher
        )
    assert publisher.sent == [] and task.status == "queued"
    assert task.run_at == now + timedelta(seconds=30)
    assert task.expires_at == task.run_at + timedelta(seconds=60), "ttl counts from run_at"
    with sessions() as session:  # neither the re-send nor the unacked path sends it early
        result = sweeper.sweep(session, publisher, timeout_grace=1, resend_after=0.1, unacked_grace=0.1,
                               now=now + timedelta(seconds=29))
        assert (result.released, result.resent, result.unacked) == (0, 0, 0)
        result = sweeper.sweep(session, publisher, timeout_grace=1, now=now + timedelta(seconds=30))
        assert result.released == 1
        again = sweeper.sweep(session, publisher, timeout_grace=1, now=now + timedelta(seconds=31))
        assert again.released == 0, "released once; re-sends take over from there"
    assert _sent_ids(publisher) == [task.id]


def test_not_before_is_run_at_and_past_times_mean_now(sessions: sessionmaker[Session], publisher: FakePublisher) -> None:
    go_online(sessions, "pc-01")
    body = TaskCreate.model_validate({"device_id": "pc-01", "type": "ping", "not_before": "2020-01-01T00:00:00Z"})
    assert body.run_at == datetime(2020, 1, 1, tzinfo=UTC)
    with sessions() as session:
        task = task_create.create_task(session, body, publisher)
    assert task.run_at is None and _sent_ids(publisher) == [task.id]
    with sessions() as session, pytest.raises(InvalidRequestError, match="not after the task's run_at"):
        task_create.create_task(session, TaskCreate(
            device_id="pc-01", type="ping", run_at=utcnow() + timedelta(hours=2), expires_at=utcnow() + timedelta(hours=1),
        ), publisher)
    with sessions() as session, pytest.raises(InvalidRequestError, match="366 days"):
        task_create.create_task(session, TaskCreate(device_id="pc-01", type="ping",
                                                    run_at=utcnow() + timedelta(days=400)), publisher)


def test_birth_redispatch_does_not_send_a_waiting_task_early(
    sessions: sessionmaker[Session], publisher: FakePublisher
) -> None:
    go_online(sessions, "pc-01", "s1")
    with sessions() as session:
        devices.apply_status(session, "pc-01", will("pc-01", "s1"))
        later = task_create.create_task(session, TaskCreate(device_id="pc-01", type="ping",
                                                             run_at=utcnow() + timedelta(minutes=5)), publisher)
        now_ = task_create.create_task(session, TaskCreate(device_id="pc-01", type="ping"), publisher)
    publisher.clear()
    go_online(sessions, "pc-01", "s2")
    with sessions() as session:
        assert task_control.redispatch_unfinished(session, "pc-01", publisher) == [now_.id]
        stored = session.get(Task, later.id)
        assert stored is not None and stored.status == "queued"


def test_a_delayed_broadcast_records_its_runs_and_sends_each_when_due(
    sessions: sessionmaker[Session], publisher: FakePublisher
) -> None:
    go_online(sessions, "pc-01")
    go_online(sessions, "pc-02")
    when = utcnow() + timedelta(seconds=10)
    with sessions() as session:
        broadcast, ids = broadcasts.create_broadcast(session, BroadcastCreate(type="ping", run_at=when, ttl=5), publisher)
    assert publisher.sent == [] and len(ids) == 2
    with sessions() as session:
        assert sweeper.release_due(session, publisher, when) == 2
        run = session.get(Task, ids[0])
        assert run is not None and run.expires_at == when + timedelta(seconds=5)
    assert sorted(topic for topic, _ in publisher.sent) == ["devices/pc-01/tasks", "devices/pc-02/tasks"]
    assert sorted(_sent_ids(publisher)) == sorted(ids)


def test_pacing_spreads_an_accounts_tasks_and_ignores_other_types(
    sessions: sessionmaker[Session], publisher: FakePublisher
) -> None:
    go_online(sessions, "pc-01")
    with sessions() as session:
        pacing.set_rule(session, PacingRuleIn(account="alice", type="echo", interval=30, jitter=90))
        pacing.set_rule(session, PacingRuleIn(account="*", type="echo", interval=5))
        start = utcnow()
        paced = [task_create.create_task(session, TaskCreate(device_id="pc-01", type="echo", account="alice",
                                                             params={"message": "hi"}), publisher) for _ in range(4)]
        other = task_create.create_task(session, TaskCreate(device_id="pc-01", type="ping", account="alice"), publisher)
        bob = [task_create.create_task(session, TaskCreate(device_id="pc-01", type="echo", account="bob",
                                                           params={"message": "hi"}), publisher) for _ in range(2)]
    assert paced[0].run_at is None, "the first one is not held back"
    times = [paced[0].created_at] + [task.run_at for task in paced[1:]]
    assert all(t is not None for t in times)
    gaps = [(b - a).total_seconds() for a, b in zip(times, times[1:])]  # type: ignore[operator]
    assert all(30 <= gap <= 120 for gap in gaps), gaps
    assert (paced[0].created_at - start).total_seconds() < 5
    assert other.run_at is None, "no rule for ping"
    assert bob[0].run_at is None and bob[1].run_at is not None
    assert (bob[1].run_at - bob[0].created_at).total_seconds() == pytest.approx(5), "the '*' rule for everyone else"
    assert _sent_ids(publisher) == [paced[0].id, other.id, bob[0].id]
    with sessions() as session:
        [alice] = [rule for rule in pacing.list_rules(session).items if rule.account == "alice"]
        assert alice.last_run_at == times[-1]


def _schedule(session: Session, cron: str = "* * * * * */10", **action: object) -> Schedule:
    body = ScheduleCreate(name="every-10s", cron=cron, timezone="Asia/Shanghai",
                          action=action or {"task": {"device_id": "pc-01", "type": "ping"}})
    return schedules.create_schedule(session, body)


def test_a_schedule_fires_each_slot_once_and_a_missed_run_once(
    sessions: sessionmaker[Session], publisher: FakePublisher
) -> None:
    go_online(sessions, "pc-01")
    with sessions() as session:
        schedule = _schedule(session)
        first = schedule.next_run_at
        assert first is not None and first.second % 10 == 0
        assert schedule_fire.fire_due(session, publisher, missed_window=60, now=first - timedelta(seconds=1)) == 0
        assert schedule_fire.fire_due(session, publisher, missed_window=60, now=first) == 1
        assert schedule_fire.fire_due(session, publisher, missed_window=60, now=first) == 0, "the slot moved on"
        # Down for 35 s: slots first+10, +20, +30 passed; only +30 fires, the two before are skipped.
        back = first + timedelta(seconds=35)
        assert schedule_fire.fire_due(session, publisher, missed_window=60, now=back) == 1
        stored = schedules.get_schedule(session, schedule.id)
        assert stored.last_run_at == first + timedelta(seconds=30) and stored.next_run_at == first + timedelta(seconds=40)
        assert stored.skipped == 2 and stored.last_skip and "only the latest" in stored.last_skip
        # Down past the window: nothing fires, every missed slot is counted.
        late = first + timedelta(seconds=205)  # the latest slot, +200, is 5 s old: more than the window of 3 s
        assert schedule_fire.fire_due(session, publisher, missed_window=3, now=late) == 0
        stored = schedules.get_schedule(session, schedule.id)
        assert stored.skipped == 2 + 17 and stored.next_run_at == first + timedelta(seconds=210)
        assert stored.last_skip and "FLEET_SCHEDULE_MISSED_WINDOW" in stored.last_skip
    ids = _sent_ids(publisher)
    assert ids == [schedule_fire.fire_id(schedule.id, first),
                   schedule_fire.fire_id(schedule.id, first + timedelta(seconds=30))]


def test_a_failing_action_is_recorded_and_the_schedule_goes_on(
    sessions: sessionmaker[Session], publisher: FakePublisher
) -> None:
    with sessions() as session:
        schedule = _schedule(session, task={"device_id": "gone", "type": "ping"})
        due = schedule.next_run_at
        assert due is not None
        assert schedule_fire.fire_due(session, publisher, missed_window=60, now=due) == 0
        stored = schedules.get_schedule(session, schedule.id)
        assert stored.last_error and "gone" in stored.last_error and stored.next_run_at == due + timedelta(seconds=10)


def test_schedule_checks_pause_resume_and_upcoming(sessions: sessionmaker[Session], publisher: FakePublisher) -> None:
    with sessions() as session:
        with pytest.raises(InvalidRequestError, match="7 fields|fields"):
            _schedule(session, cron="* * * * * * * *")
        with pytest.raises(InvalidRequestError, match="invalid cron"):
            _schedule(session, cron="61 * * * *")
        schedule = _schedule(session, cron="0 9 * * 1-5", broadcast={"type": "ping"})
        with pytest.raises(ConflictError):
            _schedule(session)
        shown = schedules.out(schedule, upcoming=True)
        assert len(shown.upcoming) == 5
        assert all(t.astimezone(schedules.ZoneInfo("Asia/Shanghai")).hour == 9 for t in shown.upcoming)
        assert all(t.astimezone(schedules.ZoneInfo("Asia/Shanghai")).weekday() < 5 for t in shown.upcoming)
        paused = schedules.set_enabled(session, "every-10s", False)
        assert paused.next_run_at is None and schedules.out(paused, upcoming=True).upcoming == []
        assert schedules.set_enabled(session, schedule.id, True).next_run_at == shown.upcoming[0]


def test_dst_skipped_and_repeated_hours_are_crons() -> None:
    """New York: 02:30 does not exist on 2026-03-08 (fires 03:00 EDT); 01:30 happens twice on
    2026-11-01 (fires in both offsets)."""
    spring = schedules.fire_times("30 2 * * *", "America/New_York",
                                  schedules.next_after("30 2 * * *", "America/New_York",
                                                       datetime(2026, 3, 7, 12, tzinfo=UTC)) or utcnow(), 2)
    assert spring[0] == datetime(2026, 3, 8, 7, 0, tzinfo=UTC)  # 03:00 EDT
    fall = schedules.next_after("30 1 * * *", "America/New_York", datetime(2026, 10, 31, 12, tzinfo=UTC))
    assert fall is not None
    assert schedules.fire_times("30 1 * * *", "America/New_York", fall, 2) == [
        datetime(2026, 11, 1, 5, 30, tzinfo=UTC), datetime(2026, 11, 1, 6, 30, tzinfo=UTC)]


def test_rest_shapes(client: TestClient) -> None:
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    bad = client.post("/api/v1/schedules", headers=headers, json={
        "name": "x", "cron": "0 9 * * *", "timezone": "Mars/Base", "action": {"task": {"device_id": "a", "type": "ping"}}})
    assert bad.status_code == 422 and "IANA" in bad.text
    bad = client.post("/api/v1/schedules", headers=headers, json={
        "name": "x", "cron": "0 9 * * *", "timezone": "UTC", "action": {"workflow": {}}})
    assert bad.status_code == 422 and "give exactly one of" in bad.json()["detail"][0]["msg"]
    made = client.post("/api/v1/schedules", headers=headers, json={
        "name": "daily", "cron": "0 9 * * 1-5", "timezone": "Asia/Shanghai", "action": {"broadcast": {"type": "ping"}}})
    assert made.status_code == 201, made.text
    assert len(client.get("/api/v1/schedules/daily", headers=headers).json()["upcoming"]) == 5
    assert client.post("/api/v1/schedules/daily/pause", headers=headers).json()["enabled"] is False
    assert client.get("/api/v1/schedules", headers=headers).json()["items"][0]["name"] == "daily"
    assert client.delete("/api/v1/schedules/daily", headers=headers).status_code == 204
    assert client.get("/api/v1/schedules/daily", headers=headers).status_code == 404
    rule = client.put("/api/v1/pacing", headers=headers, json={"account": "a/b", "type": "chat", "interval": 30, "jitter": 90})
    assert rule.status_code == 200 and rule.json()["interval"] == 30
    assert client.delete("/api/v1/pacing", headers=headers, params={"account": "a/b", "type": "chat"}).status_code == 204
    assert client.delete("/api/v1/pacing", headers=headers, params={"account": "a/b", "type": "chat"}).status_code == 404


def test_a_paced_task_is_held_back_when_the_previous_one_went_out_late(
    sessions: sessionmaker[Session], publisher: FakePublisher
) -> None:
    go_online(sessions, "pc-01")
    with sessions() as session:
        pacing.set_rule(session, PacingRuleIn(account="alice", type="ping", interval=10))
        first = task_create.create_task(session, TaskCreate(device_id="pc-01", type="ping", account="alice"), publisher)
        second = task_create.create_task(session, TaskCreate(device_id="pc-01", type="ping", account="alice"), publisher)
        third = task_create.create_task(session, TaskCreate(device_id="pc-01", type="ping", account="alice"), publisher)
        assert first.run_at is None and second.run_at is not None and third.run_at is not None
        late = second.run_at + timedelta(seconds=4)  # the sweeping controller was 4 s late for the second
        assert sweeper.release_due(session, publisher, late) == 1
        assert sweeper.release_due(session, publisher, third.run_at) == 0, "only 6 s after the second went out"
        held = session.get(Task, third.id)
        assert held is not None and held.run_at == late + timedelta(seconds=10)
        assert sweeper.release_due(session, publisher, late + timedelta(seconds=10)) == 1
    assert _sent_ids(publisher) == [first.id, second.id, third.id]


def test_a_scheduled_job_is_created_once_per_slot_and_its_paced_runs_wait(
    sessions: sessionmaker[Session], publisher: FakePublisher
) -> None:
    """A `{"job": …}` action makes a job named `<schedule>-<slot>`; the runs of a job over
    accounts honour the accounts' pacing rule like any task (held back by `run_at`)."""
    for device_id in ("pc-01", "pc-02"):
        go_online(sessions, device_id)
    with sessions() as session:
        for name, device_id in (("shop-a", "pc-01"), ("shop-b", "pc-01"), ("shop-c", "pc-02")):
            accounts.create_account(session, AccountCreate(name=name, platform="douyin", device_id=device_id))
        pacing.set_rule(session, PacingRuleIn(account="*", type="echo", interval=30))
        schedule = _schedule(session, job={"type": "echo", "params": {"message": "hi"},
                                           "target": {"accounts": ["shop-a", "shop-b", "shop-c"]}})
        first = schedule.next_run_at
        assert first is not None
        runs: dict[str, list[tuple[str | None, datetime | None, str]]] = {}
        for slot in (first, first + timedelta(seconds=10)):
            assert schedule_fire.fire_due(session, publisher, missed_window=60, now=slot) == 1
            assert schedule_fire.fire_due(session, publisher, missed_window=60, now=slot) == 0, "once per slot"
            job = session.get(Job, schedule_fire.fire_id(schedule.id, slot))
            assert job is not None and job.status == "scheduled"
            job_engine.run_pass(session, publisher, slot, pass_interval=1, max_runs=100)
            query = select(Task.account, Task.run_at, Task.id).where(Task.job_id == job.id).order_by(Task.account)
            runs[job.id] = [(account, run_at, task_id) for account, run_at, task_id in session.execute(query)]
    earlier, later = runs.values()
    assert [run[0] for run in earlier] == [run[0] for run in later] == ["shop-a", "shop-b", "shop-c"]
    assert all(run[1] is None for run in earlier), "an account's first paced task is not held back"
    assert all(run[1] == first + timedelta(seconds=30) for run in later), "30 s after the account's previous task"
    assert set(_sent_ids(publisher)) == {run[2] for run in earlier}, "the held-back runs wait for their run_at"
