"""Groups and fleet config in the controller's services (SQLite, a FakePublisher) and the pure
parts both sides share: the remote-settings allow-list, the merge order, drift, adoption of
declared groups, the resizable concurrency limit of the daemon."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from config.settings import FleetSettings
from controller.models import Device, MqttIdentity
from controller.services import devices, fleet_config, groups
from controller.services.errors import InvalidRequestError, NotFoundError
from device.slots import Slots
from schemas.common import utcnow
from schemas.config_sync import NOT_ALLOWED_HERE, DesiredConfig, ReportedConfig, check_remote_settings, decide
from tests.services_kit import ADMIN_TOKEN, FakePublisher, birth


def _settings(tmp_path: Path, **values: object) -> FleetSettings:
    return FleetSettings(data_dir=tmp_path, **values)  # type: ignore[arg-type]


def _born(sessions: sessionmaker[Session], device_id: str, declared: list[str] | None = None) -> None:
    with sessions() as session:
        devices.apply_status(session, device_id, birth(device_id, "s1", groups=declared))


def test_the_allow_list_refuses_what_devices_cannot_apply() -> None:
    accepted, refused = check_remote_settings({"heartbeat_interval": 10, "log_level": "DEBUG", "max_concurrency": 0,
                                               "poll": 1, "heartbeat": "10"})
    assert accepted == {"heartbeat_interval": 10, "log_level": "DEBUG"}
    assert set(refused) == {"max_concurrency", "poll", "heartbeat"}
    assert "between 1 and 64" in refused["max_concurrency"] and "allowed:" in refused["poll"]
    assert check_remote_settings({"heartbeat_interval": True})[1], "a bool is no interval"
    applied, rejected = decide({"heartbeat_interval": 10, "max_concurrency": 3}, ["heartbeat_interval"])
    assert applied == {"heartbeat_interval": 10} and rejected == {"max_concurrency": NOT_ALLOWED_HERE}


def test_a_declared_group_is_shown_but_no_membership(sessions: sessionmaker[Session], tmp_path: Path) -> None:
    _born(sessions, "pc-eu", ["eu"])
    publisher = FakePublisher()
    with sessions() as session:
        shown = groups.get_groups(session, "pc-eu")
        assert (shown.groups, shown.declared, shown.declared_not_accepted) == ([], ["eu"], ["eu"])
        groups.after_births(session, ["pc-eu"], _settings(tmp_path), publisher)
    assert publisher.retained == {}, "nothing desired, nothing published"
    with sessions() as session:
        groups.after_births(session, ["pc-eu"], _settings(tmp_path, accept_declared_groups=True), publisher)
    with sessions() as session:
        assert groups.get_groups(session, "pc-eu").groups == ["eu"]
    message = publisher.retained["devices/pc-eu/config"]
    assert isinstance(message, DesiredConfig) and (message.groups, message.revision) == (["eu"], 1)


def test_membership_follows_into_the_identity_and_the_device(sessions: sessionmaker[Session], tmp_path: Path) -> None:
    with sessions() as session:
        session.add(MqttIdentity(name="pc-new", role="device", groups=[], password_hash="x"))
        session.commit()
    publisher = FakePublisher()
    with sessions() as session:  # provisioned, never seen: its groups wait for its first connection
        shown = groups.change_groups(session, "pc-new", _settings(tmp_path), publisher, replace=["lab", "eu"])
        assert shown.groups == ["eu", "lab"]
        assert session.get(MqttIdentity, "pc-new").groups == ["eu", "lab"]  # type: ignore[union-attr]
        groups.change_groups(session, "pc-new", _settings(tmp_path), publisher, remove=["lab"])
        assert session.get(MqttIdentity, "pc-new").groups == ["eu"]  # type: ignore[union-attr]
    message = publisher.retained["devices/pc-new/config"]
    assert isinstance(message, DesiredConfig) and (message.groups, message.revision) == (["eu"], 2)
    with sessions() as session, pytest.raises(NotFoundError):
        groups.change_groups(session, "nobody", _settings(tmp_path), publisher, add=["eu"])


def test_levels_merge_global_then_groups_by_name_then_device(sessions: sessionmaker[Session], tmp_path: Path) -> None:
    _born(sessions, "pc-01")
    publisher = FakePublisher()
    with sessions() as session:
        groups.change_groups(session, "pc-01", _settings(tmp_path), publisher, replace=["b-group", "a-group"])
        fleet_config.set_and_publish(session, "global", "", {"log_level": "INFO", "heartbeat_interval": 30}, publisher)
        fleet_config.set_and_publish(session, "group", "a-group", {"max_concurrency": 2, "log_level": "WARNING"}, publisher)
        fleet_config.set_and_publish(session, "group", "b-group", {"max_concurrency": 5}, publisher)
        fleet_config.set_and_publish(session, "device", "pc-01", {"heartbeat_interval": 10}, publisher)
        view = fleet_config.view(session, "pc-01")
        with pytest.raises(InvalidRequestError, match="poll"):
            fleet_config.set_level(session, "global", "", {"poll": 1})
    assert view.desired == {"log_level": "WARNING", "heartbeat_interval": 10, "max_concurrency": 5}
    assert view.sources == {"log_level": "group:a-group", "heartbeat_interval": "device", "max_concurrency": "group:b-group"}
    message = publisher.retained["devices/pc-01/config"]
    assert isinstance(message, DesiredConfig) and message.settings == view.desired and message.revision == view.revision
    assert [d.setting for d in view.drift] == ["log_level", "heartbeat_interval", "max_concurrency", "groups"]
    with sessions() as session:  # publishing the same merged config again is not a new revision
        assert fleet_config.sync(session, ["pc-01"], publisher) == 0


def test_a_report_is_recorded_and_drift_names_the_reason(sessions: sessionmaker[Session], tmp_path: Path) -> None:
    _born(sessions, "pc-01")
    publisher = FakePublisher()
    with sessions() as session:
        fleet_config.set_and_publish(session, "device", "pc-01", {"heartbeat_interval": 7, "max_concurrency": 3}, publisher)
        revision = fleet_config.view(session, "pc-01").revision
        report = ReportedConfig(device_id="pc-01", revision=revision, applied={"heartbeat_interval": 7},
                                rejected={"max_concurrency": NOT_ALLOWED_HERE}, at=utcnow())
        fleet_config.stage_reported(session, "pc-01", report)
        fleet_config.stage_reported(session, "pc-01", report.model_copy(update={"device_id": "pc-02"}))  # ignored
        session.commit()
    with sessions() as session:
        device = session.get(Device, "pc-01")
        assert device is not None and device.heartbeat_interval == 7
        view = fleet_config.view(session, "pc-01")
        assert [(d.setting, d.reason) for d in view.drift] == [("max_concurrency", f"rejected by the device: {NOT_ALLOWED_HERE}")]
        assert [v.device_id for v in fleet_config.drift(session)] == ["pc-01"]
        fleet_config.set_and_publish(session, "device", "pc-01", {"heartbeat_interval": 7}, publisher)
        assert [d.setting for d in fleet_config.view(session, "pc-01").drift] == ["revision"]


def test_slots_resize_while_tasks_wait() -> None:
    async def until(condition: Callable[[], bool]) -> None:
        while not condition():
            await asyncio.sleep(0)  # one turn of the loop for the tasks: no fixed wait

    async def scenario() -> list[int]:
        slots = Slots(1)
        peak: list[int] = []
        tried: list[int] = []
        release = asyncio.Event()

        async def task() -> None:
            tried.append(1)
            async with slots:
                peak.append(slots.used)
                await release.wait()

        runners = [asyncio.create_task(task()) for _ in range(3)]
        await asyncio.wait_for(until(lambda: len(tried) == 3 and slots.used == 1), 5)
        await asyncio.sleep(0)
        assert slots.used == 1, "two tasks wait while the limit is 1"
        await slots.resize(3)
        await asyncio.wait_for(until(lambda: slots.used == 3), 5)
        release.set()
        await asyncio.gather(*runners)
        return peak

    assert max(asyncio.run(scenario())) == 3


def test_the_device_page_shows_groups_config_and_drift(client: TestClient) -> None:
    sessions: sessionmaker[Session] = client.app.state.sessions  # type: ignore[attr-defined]
    _born(sessions, "pc-01", ["eu"])
    assert client.put("/api/v1/devices/pc-01/groups", json={"groups": ["lab"]}).status_code == 200
    assert client.put("/api/v1/devices/pc-01/config", json={"settings": {"max_concurrency": 2}}).status_code == 200
    bad = client.put("/api/v1/groups/lab/config", json={"settings": {"max_concurrency": 99}})
    assert bad.status_code == 422 and "between 1 and 64" in bad.json()["detail"]
    assert client.put("/api/v1/groups/not a group/config", json={"settings": {}}).status_code == 422
    browser = TestClient(client.app, follow_redirects=False)
    browser.get("/login")
    browser.post("/login", data={"token": ADMIN_TOKEN, "csrf_token": browser.cookies["fleet_csrf"], "next": "/"})
    page = browser.get("/devices/pc-01", headers={"Accept-Language": "zh-CN"}).text
    assert "分组与配置" in page and 'id="declared-not-accepted"' in page and "eu" in page
    assert 'id="config-drift"' in page and "max_concurrency" in page
