"""Device presence in the controller's services on a real SQLite database: births and wills of
the current session, stale wills, statuses naming another device, device listing filters and
presence alerts.
"""

from __future__ import annotations

from datetime import timedelta, timezone

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from controller.models import Device
from controller.services import devices
from tests.services_kit import birth, go_online, will


def test_birth_and_will_of_the_current_session(sessions: sessionmaker[Session]) -> None:
    assert go_online(sessions, "pc-01", "s1", groups=["lab"]) is True
    assert go_online(sessions, "pc-01", "s1") is False, "a repeated (retained) birth is not a new session"
    with sessions() as session:
        device = devices.get_device(session, "pc-01")
        assert (device.status, device.session_id, device.name) == ("online", "s1", "PC pc-01")
        assert device.online_since is not None and device.online_since.tzinfo is not None
        assert devices.apply_status(session, "pc-01", will("pc-01", "s1")) is False
    with sessions() as session:
        device = devices.get_device(session, "pc-01")
        assert device.status == "offline"
        history = devices.connections(session, "pc-01")
        assert [(c.state, c.session_id) for c in history] == [("offline", "s1"), ("online", "s1")]
        assert all(c.at.tzinfo == timezone.utc for c in history)


def test_stale_will_never_marks_a_live_device_offline(sessions: sessionmaker[Session], caplog: pytest.LogCaptureFixture) -> None:
    go_online(sessions, "pc-01", "s1")
    assert go_online(sessions, "pc-01", "s2") is True, "a birth with a new session id is a new session"
    with sessions() as session, caplog.at_level("INFO"):
        devices.apply_status(session, "pc-01", will("pc-01", "s1"))
    assert "stale" in caplog.text
    with sessions() as session:
        device = devices.get_device(session, "pc-01")
        assert (device.status, device.session_id) == ("online", "s2")
        assert [c.state for c in devices.connections(session, "pc-01")] == ["online", "online"]


def test_status_naming_another_device_is_ignored(sessions: sessionmaker[Session], caplog: pytest.LogCaptureFixture) -> None:
    with sessions() as session, caplog.at_level("WARNING"):
        assert devices.apply_status(session, "pc-01", birth("pc-02", "s1")) is False
    assert "names another device" in caplog.text
    with sessions() as session:
        assert session.scalars(select(Device)).all() == []


def test_list_devices_filters(sessions: sessionmaker[Session]) -> None:
    go_online(sessions, "pc-01", groups=["lab"])
    go_online(sessions, "pc-02", groups=["office"])
    go_online(sessions, "mac-03", groups=["lab"])
    with sessions() as session:
        devices.apply_status(session, "mac-03", will("mac-03", "s1"))
    with sessions() as session:
        assert [d.id for d in devices.list_devices(session, group="lab")[0]] == ["mac-03", "pc-01"]
        assert [d.id for d in devices.list_devices(session, status="online")[0]] == ["pc-01", "pc-02"]
        assert [d.id for d in devices.list_devices(session, q="PC ")[0]] == ["mac-03", "pc-01", "pc-02"]
        page, total = devices.list_devices(session, limit=1, offset=1)
        assert ([d.id for d in page], total) == (["pc-01"], 3)


def test_presence_alerts_for_reconnect_storms_and_takeovers(sessions: sessionmaker[Session]) -> None:
    for n in range(devices.FLAP_BIRTHS):
        go_online(sessions, "pc-storm", f"bootaaaa-{n}")
        with sessions() as session:
            devices.apply_status(session, "pc-storm", will("pc-storm", f"bootaaaa-{n}"))
    with sessions() as session:
        alert = devices.get_device(session, "pc-storm").presence_alert
    assert alert is not None and alert.startswith("reconnect_storm: 5 connections")

    go_online(sessions, "pc-twin", "bootaaaa-1")
    go_online(sessions, "pc-twin", "bootbbbb-1")  # a new daemon while the first never went offline
    with sessions() as session:
        alert = devices.get_device(session, "pc-twin").presence_alert
    assert alert is not None and alert.startswith("takeover: daemon bootbbbb") and "bootaaaa" in alert
    with sessions() as session:
        devices.apply_status(session, "pc-twin", will("pc-twin", "bootbbbb-1"))
    go_online(sessions, "pc-twin", "bootbbbb-2")  # an ordinary reconnect clears it
    with sessions() as session:
        assert devices.get_device(session, "pc-twin").presence_alert is None


def test_a_replayed_birth_neither_delays_nor_undoes_silence(sessions: sessionmaker[Session]) -> None:
    """A controller that subscribes again (its own broker node died) gets the retained births
    of devices whose node died too: those are no sign of life."""

    def born(session_id: str) -> bool:
        status = birth("pc-01", session_id)
        assert status.facts is not None
        status = status.model_copy(update={"facts": status.facts.model_copy(update={"heartbeat_interval": 5})})
        with sessions() as session:
            return devices.apply_status(session, "pc-01", status)

    assert born("s1") is True
    with sessions() as session:
        deadline = devices.get_device(session, "pc-01").silent_after
    assert deadline is not None
    assert born("s1") is False  # the retained copy again
    with sessions() as session:
        assert devices.get_device(session, "pc-01").silent_after == deadline
        assert devices.mark_silent(session, deadline + timedelta(seconds=0.5)) == 1
    assert born("s1") is False  # replayed after that
    with sessions() as session:
        assert devices.get_device(session, "pc-01").status == "offline"
    assert born("s2") is True  # a new session is news
