"""Housekeeping units (docs/architecture.md#housekeeping): the task-defaults and retention
settings and their errors, `task_defaults.resolve`, the bulk-cancel filter, placement's choice
(platform accounts, then load, then CPU; never offline), and the scheduled prune's timing."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from config.settings import SettingsError, load_settings
from config.settings_housekeeping import HousekeepingSettings
from controller.models import Account, Device
from controller.services import retention, task_create, task_defaults
from controller.services.errors import ConflictError, InvalidRequestError
from schemas.api import TaskCreate
from schemas.common import utcnow
from schemas.housekeeping import TaskCancelFilter
from tests.services_kit import FakePublisher, go_online

TYPES = ["ping", "echo", "sleep", "chat"]


def test_task_defaults_replace_only_the_types_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "fleet.toml"
    config.write_text("[task_defaults.login]\nttl = 120\n\n[task_defaults.report]\nttl = 60\ntimeout = 30\n")
    monkeypatch.setenv("FLEET_CONFIG", str(config))
    table = load_settings().task_defaults
    assert (table["login"].ttl, table["login"].timeout) == (120, 900)  # timeout: the shipped login one
    assert (table["report"].ttl, table["report"].timeout) == (60, 30)
    assert (table["*"].ttl, table["*"].timeout) == (86_400, 3600)
    assert table["chat"].ttl == 3600


@pytest.mark.parametrize(("value", "expected"), [
    ('{"login": {"ttl": 0}}', "task type 'login': field 'ttl'"),
    ('{"login": {"ttl": 10, "retries": 3}}', "give a table with ttl and timeout"),
    ('{"Bad Type": {"ttl": 10}}', "is not a task type"),
    ('["login"]', "expected a table of task types"),
])
def test_bad_task_defaults_say_what_is_wrong(value: str, expected: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEET_TASK_DEFAULTS", value)
    with pytest.raises(SettingsError, match="FLEET_TASK_DEFAULTS") as error:
        load_settings()
    assert expected in str(error.value)


def test_retention_durations(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEET_RETENTION_TASK_EVENTS", "12h")
    monkeypatch.setenv("FLEET_RETENTION_CONNECTIONS", "never")
    settings = load_settings()
    assert settings.retention_task_events == timedelta(hours=12) and settings.retention_connections is None
    assert settings.retention_tasks is None and settings.retention_alert_deliveries == timedelta(days=30)
    monkeypatch.setenv("FLEET_RETENTION_TASKS", "3 days")
    with pytest.raises(SettingsError, match="not a duration"):
        load_settings()


def test_resolve_uses_the_type_default_unless_given() -> None:
    now = utcnow()
    assert task_defaults.resolve("login", now) == (now + timedelta(seconds=600), 900)
    assert task_defaults.resolve("mystery", now) == (now + timedelta(seconds=86_400), 3600)
    assert task_defaults.resolve("login", now, ttl=5, timeout=7) == (now + timedelta(seconds=5), 7)
    assert task_defaults.resolve("login", now, expires_at=now + timedelta(hours=2)).expires_at == now + timedelta(hours=2)
    with pytest.raises(InvalidRequestError, match="in the past"):
        task_defaults.resolve("login", now, expires_at=now - timedelta(seconds=1))


def test_the_cancel_filter_needs_a_filter() -> None:
    with pytest.raises(ValidationError, match="at least one of device_id"):
        TaskCancelFilter.model_validate({"status": ["running"], "dry_run": True})
    with pytest.raises(ValidationError):
        TaskCancelFilter.model_validate({"device_id": "pc-1", "status": ["succeeded"]})
    assert TaskCancelFilter(device_id="pc-1", type="chat").filters() == {"device_id": "pc-1", "type": "chat"}


def _online(sessions: sessionmaker[Session], device_id: str, cpu: float | None) -> None:
    go_online(sessions, device_id, task_types=TYPES, groups=["office"])
    with sessions() as session:
        metrics = None if cpu is None else {"cpu_percent": cpu, "memory_percent": 1.0, "disk_free_bytes": 1}
        session.execute(update(Device).where(Device.id == device_id).values(metrics=metrics))
        session.commit()


def _place(sessions: sessionmaker[Session], publisher: FakePublisher, task_type: str, **body: Any) -> str:
    placement = {"target": {"groups": ["office"]}}
    with sessions() as session:
        task = task_create.create_task(session, TaskCreate.model_validate(
            {"type": task_type, "placement": placement, **body}), publisher)
        return task.device_id


def test_placement_prefers_platform_accounts_then_load_then_cpu(
    sessions: sessionmaker[Session], publisher: FakePublisher
) -> None:
    _online(sessions, "calm", cpu=5)
    _online(sessions, "busy", cpu=90)
    _online(sessions, "blind", cpu=None)  # no heartbeat yet: last on CPU
    go_online(sessions, "asleep", task_types=TYPES, groups=["office"])
    with sessions() as session:
        session.execute(update(Device).where(Device.id == "asleep").values(status="offline"))
        session.add(Account(name="dy-1", platform="douyin", device_id="busy"))
        session.commit()
    chat = {"params": {"platform": "douyin", "to": "fan", "message": "hi"}}
    assert _place(sessions, publisher, "chat", **chat) == "busy"  # holds a douyin account
    assert _place(sessions, publisher, "ping") == "calm"  # equal load: lowest CPU
    assert _place(sessions, publisher, "ping") == "blind"  # calm has 1 unfinished task now
    assert _place(sessions, publisher, "ping", account="dy-1") == "busy"
    with pytest.raises(ConflictError, match="runs task type 'upload'"):
        _place(sessions, publisher, "upload", params={"platform": "x", "video_url": "http://h/v.mp4"})


def test_the_scheduled_prune_waits_its_interval(sessions: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [100.0]
    job = retention.ScheduledPrune(HousekeepingSettings(prune_interval=60), lambda: clock[0])
    calls: list[object] = []
    monkeypatch.setattr(retention, "prune", lambda *args, **kwargs: calls.append(args) or ({}, []))
    with sessions() as session:
        job(session, utcnow())  # the first prune comes one interval after taking the lease
        clock[0] += 59
        job(session, utcnow())
        assert calls == []
        clock[0] += 2
        job(session, utcnow())
        assert len(calls) == 1
