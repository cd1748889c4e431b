"""Alert webhooks in-process (docs/architecture.md#alerts): signatures, rule parsing and its
errors, the backoff schedule, detection on a real SQLite database (once per occurrence, also
when two controllers look at once), attempt outcomes, the sender against a real local HTTP
server, and the REST endpoints."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import random
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from config.settings import FleetSettings, SettingsError, load_settings
from config.settings_alerts import parse_rules
from controller.alerts import hooks, outbox, sender
from controller.alerts.detect import detect
from controller.app import create_app
from controller.models import Account, AlertDelivery, Task
from controller.services import accounts, devices
from schemas.alerts import AlertEvent, signature_header, verify_signature
from schemas.common import utcnow
from tests.services_kit import ADMIN_TOKEN, go_online, unused_port, will
from tests.webhook_receiver import Receiver

URL = "https://hooks.example.com/fleet?token=sekrit-query-token"


# ---- signing ----------------------------------------------------------------------------


def test_signature_is_hmac_sha256_over_timestamp_dot_body() -> None:
    body = b'{"id":"abc"}'
    header = signature_header(b"k" * 16, body, timestamp=1_700_000_000)
    expected = hmac.new(b"k" * 16, b"1700000000." + body, hashlib.sha256).hexdigest()
    assert header == f"t=1700000000,v1={expected}"
    assert verify_signature(b"k" * 16, body, header, now=1_700_000_100)


@pytest.mark.parametrize("change", ["body", "secret", "stale", "garbled", "no-v1"])
def test_a_wrong_signature_is_refused(change: str) -> None:
    body, secret = b'{"id":"abc"}', b"s" * 16
    header = signature_header(secret, body, timestamp=1_700_000_000)
    now = 1_700_000_000.0
    if change == "body":
        body = b'{"id":"abd"}'
    elif change == "secret":
        secret = b"t" * 16
    elif change == "stale":
        now += 301
    elif change == "garbled":
        header = "v1=abc"
    else:
        header = header.split(",")[0]
    assert not verify_signature(secret, body, header, now=now)


# ---- rule parsing -----------------------------------------------------------------------


def _load(rules: Any, **settings: Any) -> FleetSettings:
    return load_settings(alert_rules=rules, **settings)


def test_rules_of_every_kind_parse(tmp_path: Path) -> None:
    settings = _load([
        {"name": "off", "kind": "device_offline", "minutes": 0.5, "url": URL, "secret": "x" * 16},
        {"name": "pres", "kind": "presence", "url": URL, "alerts": ["takeover"]},
        {"name": "fail", "kind": "task_failed", "url": URL, "types": ["upload"], "platforms": ["douyin"]},
        {"name": "exp", "kind": "account_login_expired", "url": URL},
    ])
    assert [rule.kind for rule in settings.alert_rules] == ["device_offline", "presence", "task_failed",
                                                           "account_login_expired"]
    assert settings.alert_rules[0].minutes == 0.5


def test_rules_from_toml_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "fleet.toml"
    config.write_text('[[alert_rules]]\nname = "off"\nkind = "device_offline"\nminutes = 5\n'
                      f'url = "{URL}"\n', encoding="utf-8")
    monkeypatch.setenv("FLEET_CONFIG", str(config))
    assert load_settings().alert_rules[0].name == "off"
    monkeypatch.setenv("FLEET_ALERT_RULES", json.dumps([{"name": "env", "kind": "presence", "url": URL}]))
    assert load_settings().alert_rules[0].name == "env"


@pytest.mark.parametrize(("rule", "says"), [
    ({"name": "off", "kind": "device_offline", "minutes": 0, "url": URL}, "rule 1 ('off'): field 'minutes'"),
    ({"name": "off", "kind": "device_offline", "url": URL}, "rule 1 ('off'): field 'minutes': Field required"),
    ({"name": "off", "kind": "device_gone", "url": URL}, "rule 1 ('off'): field 'kind' must be one of"),
    ({"name": "off", "kind": "presence", "url": "ftp://x"}, "rule 1 ('off'): field 'url'"),
    ({"name": "off", "kind": "presence", "url": URL, "alerts": ["meltdown"]}, "field 'alerts.0'"),
    ({"name": "off", "kind": "task_failed", "url": URL, "statusez": []}, "field 'statusez': Extra inputs"),
    ({"name": "off", "kind": "presence", "url": URL, "secret": "short-secret"}, "field 'secret'"),
    ({"name": "bad name", "kind": "presence", "url": URL}, "rule 1 ('bad name'): field 'name'"),
])
def test_a_bad_rule_gets_an_error_naming_rule_and_field(rule: dict[str, Any], says: str) -> None:
    with pytest.raises(SettingsError) as caught:
        _load([rule])
    message = str(caught.value)
    assert says in message and "FLEET_ALERT_RULES" in message
    assert "sekrit" not in message and "short-secret" not in message, "a secret or the URL's token was echoed"


def test_second_rule_is_named_and_names_must_be_unique() -> None:
    with pytest.raises(ValueError, match=r"rule 2 \('b'\): field 'minutes'"):
        parse_rules([{"name": "a", "kind": "presence", "url": URL},
                     {"name": "b", "kind": "device_offline", "minutes": -1, "url": URL}])
    with pytest.raises(ValueError, match="'a' is used 2 times"):
        parse_rules([{"name": "a", "kind": "presence", "url": URL}] * 2)
    with pytest.raises(ValueError, match="JSON list"):
        parse_rules("offline")


# ---- backoff ----------------------------------------------------------------------------


def test_backoff_doubles_with_jitter_up_to_the_cap() -> None:
    rand = random.Random(7)
    for attempts, nominal in [(1, 5), (2, 10), (3, 20), (4, 40), (10, 2560)]:
        for _ in range(50):
            delay = outbox.backoff_delay(attempts, 5, 3600, rand)
            assert nominal * 0.75 <= delay <= nominal * 1.25
    assert all(outbox.backoff_delay(30, 5, 3600, rand) <= 3600 for _ in range(50))
    assert outbox.backoff_delay(60, 5, 60, rand) >= 45


# ---- detection --------------------------------------------------------------------------


def _rules(**extra: Any) -> list[Any]:
    return parse_rules([
        {"name": "off", "kind": "device_offline", "minutes": 1, "url": URL},
        {"name": "pres", "kind": "presence", "url": URL, "quiet_minutes": 0},
        {"name": "fail", "kind": "task_failed", "url": URL, "types": ["upload"]},
        {"name": "exp", "kind": "account_login_expired", "url": URL},
    ])


def _detect(sessions: sessionmaker[Session], minutes_later: float = 0) -> list[AlertEvent]:
    with sessions() as session:
        return detect(session, _rules(), utcnow() + timedelta(minutes=minutes_later))


def test_device_offline_fires_once_per_offline_period(sessions: sessionmaker[Session]) -> None:
    go_online(sessions, "pc-01", "boot-1")
    with sessions() as session:
        devices.apply_status(session, "pc-01", will("pc-01", "boot-1"))
    assert _detect(sessions) == [], "not offline for a minute yet"
    raised = _detect(sessions, 1.1)
    assert [(e.kind, e.subject) for e in raised] == [("device_offline", "pc-01")]
    assert _detect(sessions, 2) == []
    go_online(sessions, "pc-01", "boot-1b")  # back, and away again: a new offline period
    with sessions() as session:
        devices.apply_status(session, "pc-01", will("pc-01", "boot-1b"))
    assert [e.subject for e in _detect(sessions, 1.1)] == ["pc-01"]


def test_two_controllers_looking_at_once_record_one_alert(sessions: sessionmaker[Session],
                                                          engine: Any) -> None:
    from controller.db import create_sessionmaker

    go_online(sessions, "pc-02", "boot-2")
    with sessions() as session:
        devices.apply_status(session, "pc-02", will("pc-02", "boot-2"))
    other = create_sessionmaker(engine)
    with sessions() as first, other() as second:
        now = utcnow() + timedelta(minutes=2)
        raised = detect(first, _rules(), now) + detect(second, _rules(), now)
    assert len(raised) == 1
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(AlertDelivery)) == 1


def test_takeover_raises_a_presence_alert(sessions: sessionmaker[Session]) -> None:
    go_online(sessions, "pc-03", "boot-a-1")
    go_online(sessions, "pc-03", "boot-b-1")  # another daemon while the first never went offline
    raised = [e for e in _detect(sessions) if e.kind == "presence"]
    assert [(e.subject, e.data["alert"]) for e in raised] == [("pc-03", "takeover")]
    assert [e for e in _detect(sessions) if e.kind == "presence"] == []


def _task(session: Session, task_id: str, status: str, type_: str = "upload", **fields: Any) -> Task:
    now = utcnow()
    task = Task(id=task_id, device_id="pc-04", type=type_, status=status, origin="api", params={"platform": "douyin"},
                created_at=now, updated_at=now, finished_at=now, **fields)
    session.add(task)
    session.commit()
    return task


def test_task_failed_fires_for_final_failures_of_the_rule_types(sessions: sessionmaker[Session]) -> None:
    go_online(sessions, "pc-04", "boot-4")
    with sessions() as session:
        _task(session, "t-failed", "failed", error={"code": "upload_rejected", "message": "no"})
        _task(session, "t-timed-out", "timed_out")
        _task(session, "t-retrying", "failed", retry_at=utcnow() + timedelta(minutes=1))
        _task(session, "t-other-type", "failed", type_="echo")
        _task(session, "t-ok", "succeeded")
    raised = sorted((e.subject, e.data["status"]) for e in _detect(sessions) if e.kind == "task_failed")
    assert raised == [("t-failed", "failed"), ("t-timed-out", "timed_out")]
    assert [e for e in _detect(sessions) if e.kind == "task_failed"] == []


def test_an_account_whose_login_lapses_raises_login_expired(sessions: sessionmaker[Session]) -> None:
    """The real path: a logged-in account's chat task fails with not_logged_in → `expired`."""
    go_online(sessions, "pc-04", "boot-4")
    with sessions() as session:
        session.add(Account(name="shop-1", platform="douyin", device_id="pc-04", login_status="logged_in"))
        session.commit()
        task = _task(session, "chat-1", "failed", type_="chat", account="shop-1",
                     error={"code": accounts.NOT_LOGGED_IN.value, "message": "logged out"})
        accounts.apply_outcome(session, task)
        session.commit()
        assert accounts.get_account(session, "shop-1").login_status == "expired"
    raised = [e for e in _detect(sessions) if e.kind == "account_login_expired"]
    assert [(e.subject, e.data["task_id"]) for e in raised] == [("shop-1", "chat-1")]
    assert [e for e in _detect(sessions) if e.kind == "account_login_expired"] == []


def test_listeners_hear_of_raised_alerts(sessions: sessionmaker[Session]) -> None:
    heard: list[AlertEvent] = []
    listeners: list[hooks.Listener] = [heard.append, lambda _event: 1 / 0]  # a broken listener stops nothing
    go_online(sessions, "pc-05", "boot-5")
    with sessions() as session:
        devices.apply_status(session, "pc-05", will("pc-05", "boot-5"))
    for event in _detect(sessions, 2):
        hooks.publish(listeners, event)
    assert [e.subject for e in heard] == ["pc-05"]
    notice = hooks.to_live(heard[0])
    assert notice.kind == "alert" and notice.rule == "device_offline" and notice.device_id == "pc-05"


# ---- outcomes ---------------------------------------------------------------------------


def _pending(sessions: sessionmaker[Session]) -> str:
    with sessions() as session:
        return outbox.create_test(session, _rules(), "off", utcnow()).id


def test_attempts_retry_then_give_up(sessions: sessionmaker[Session]) -> None:
    delivery = _pending(sessions)
    for attempt in (1, 2, 3):
        with sessions() as session:
            claimed = outbox.claim_due(session, utcnow() + timedelta(hours=2 * attempt), 10, 40)
            assert [c.attempts for c in claimed] == [attempt]
            now = utcnow()
            state = outbox.record_outcome(session, delivery, outbox.Outcome(False, 500, "HTTP 500"), now,
                                          max_attempts=3, base=5, cap=3600)
            row = session.get(AlertDelivery, delivery)
            assert row is not None
            if attempt < 3:
                assert state == "pending" and row.next_attempt_at is not None
                wait = (row.next_attempt_at - now).total_seconds()
                assert 5 * 2 ** (attempt - 1) * 0.75 <= wait <= 5 * 2 ** (attempt - 1) * 1.25
    assert state == "failed" and row.last_error == "gave up after 3 attempt(s): HTTP 500"


def test_a_claimed_delivery_is_not_claimed_again_until_its_hold_lapses(sessions: sessionmaker[Session]) -> None:
    _pending(sessions)
    with sessions() as session:
        now = utcnow()
        assert len(outbox.claim_due(session, now, 10, 40)) == 1
        assert outbox.claim_due(session, now + timedelta(seconds=39), 10, 40) == []
        assert len(outbox.claim_due(session, now + timedelta(seconds=41), 10, 40)) == 1


# ---- sending ----------------------------------------------------------------------------


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    instance = Receiver()
    yield instance
    instance.close()


def _send(rule_url: str, timeout: float = 5) -> outbox.Outcome:
    rule = parse_rules([{"name": "r", "kind": "presence", "url": rule_url}])[0]

    async def run() -> outbox.Outcome:
        async with httpx.AsyncClient() as client:
            return await sender.send(client, rule, SecretStr("k" * 16), "d-1", "test", {"id": "d-1"}, timeout)

    return asyncio.run(run())


def test_sender_signs_and_reports_answers(receiver: Receiver) -> None:
    assert _send(receiver.url("ok")) == outbox.Outcome(True, 200)
    got = receiver.of("/ok")[0]
    assert got.headers["x-fleet-delivery"] == "d-1" and got.headers["x-fleet-event"] == "test"
    assert verify_signature(b"k" * 16, got.body, got.headers["x-fleet-signature"])
    receiver.behaviour.down.set()
    assert _send(receiver.url("down?token=sekrit")) == outbox.Outcome(False, 503, "HTTP 503 Service Unavailable")


def test_sender_errors_never_show_the_url(receiver: Receiver) -> None:
    timed_out = _send(receiver.url("hang?token=sekrit"), timeout=0.3)
    assert timed_out.delivered is False and timed_out.error is not None and "no answer within 0.3 s" in timed_out.error
    refused = _send(f"http://127.0.0.1:{unused_port()}/x?token=sekrit")
    assert refused.delivered is False and refused.error and "sekrit" not in refused.error


# ---- REST -------------------------------------------------------------------------------


def test_rest_lists_alerts_and_queues_tests(tmp_path: Path) -> None:
    settings = FleetSettings(
        data_dir=tmp_path / "data", database_url=f"sqlite:///{tmp_path / 'data' / 'controller.db'}",
        mqtt_url=f"mqtt://127.0.0.1:{unused_port()}", admin_token=ADMIN_TOKEN,
        alert_rules=[{"name": "off", "kind": "device_offline", "minutes": 5, "url": URL}], alert_interval=60,
    )
    with TestClient(create_app(settings), headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as client:
        missing = client.post("/api/v1/alerts/test", json={"rule": "nope"})
        assert missing.status_code == 404 and "configured rules: off" in missing.json()["detail"]
        queued = client.post("/api/v1/alerts/test", json={"rule": "off"})
        assert queued.status_code == 202, queued.text
        listed = client.get("/api/v1/alerts", params={"state": "pending"}).json()
        assert [(a["id"], a["kind"], a["state"]) for a in listed] == [(queued.json()["id"], "test", "pending")]
        assert "sekrit" not in json.dumps(listed)
        token = client.post("/api/v1/tokens", json={"name": "viewer", "scope": "read"}).json()["token"]
        viewer = {"Authorization": f"Bearer {token}"}
        assert client.get("/api/v1/alerts", headers=viewer).status_code == 200
        assert client.post("/api/v1/alerts/test", json={"rule": "off"}, headers=viewer).status_code == 403
        assert client.get("/api/v1/alerts", headers={"Authorization": ""}).status_code == 401


def test_the_readme_receiver_checks_signatures() -> None:
    """The README's receiver snippet accepts what the controller signs and refuses the rest."""
    import re

    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Alerts\n", 1)[1]
    code = re.findall(r"```python\n(.*?)```", section, re.S)[0]
    code = "\n".join(line for line in code.splitlines() if not line.startswith("HTTPServer("))  # no listening
    scope: dict[str, Any] = {}
    exec(compile(code, "README.md", "exec"), scope)  # noqa: S102 (our own README)
    secret, body = b"a-long-random-string-for-signatures", b'{"id":"d-1"}'
    header = signature_header(secret, body)
    assert scope["verified"](body, header)
    assert not scope["verified"](body + b" ", header)
    assert not scope["verified"](body, signature_header(secret, body, timestamp=1_000_000_000))
