"""Alert webhooks (issue 15) with real processes: Mosquitto, two `fleet controller`s on one
PostgreSQL database, `fleet device` daemons, and a real HTTP receiver in this process
(tests/webhook_receiver.py). One fleet per module; each test makes its own device or alert.

- a killed device's offline alert reaches the receiver once, signed, with two controllers;
- a receiver that answers 500 twice gets the alert on the 3rd attempt, after backoff;
- a hanging receiver: /healthz latency stays normal and task results are still recorded;
- a timed-out task raises task_failed; an account marked expired raises account_login_expired;
- a pending delivery is retried by the controller restarted after a SIGKILL.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from schemas.alerts import verify_signature
from tests.databases import fresh_postgres
from tests.harness import Broker, Controller, Device, Process, missing_service, wait_for
from tests.stream_reader import Stream
from tests.webhook_receiver import Receiver

pytestmark = pytest.mark.integration

SECRET = "offline-secret-0123456789"
GLOBAL_SECRET = "global-secret-0123456789"
TIMEOUT = 8.0  # FLEET_ALERT_TIMEOUT
CONCURRENCY = 3
WORKER = "al-worker"


def _rules(receiver: Receiver) -> list[dict[str, Any]]:
    never = {"kind": "account_login_expired", "platforms": ["no-such-platform"]}  # only test alerts go there
    return [
        {"name": "offline", "kind": "device_offline", "minutes": 0.05, "url": receiver.url("offline"), "secret": SECRET},
        {"name": "failed", "kind": "task_failed", "types": ["sleep"], "url": receiver.url("failed")},
        {"name": "expired", "kind": "account_login_expired", "url": receiver.url("expired")},
        {"name": "flaky", **never, "url": receiver.url("flaky"), "max_attempts": 5},
        {"name": "hang", **never, "url": receiver.url("hang"), "max_attempts": 2},
        {"name": "down", **never, "url": receiver.url("down"), "max_attempts": 50},
    ]


@dataclass
class Fleet:
    broker: Broker
    a: Controller
    b: Controller
    receiver: Receiver
    database_url: str
    work: Path
    processes: list[Process]

    def device(self, device_id: str) -> Device:
        device = Device(device_id, self.broker, self.work, keepalive="2", reconnect_min_delay="0.2",
                        reconnect_max_delay="1")
        self.processes.append(device.process)
        device.start()
        return device


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    work = tmp_path_factory.mktemp("alerts")
    receiver = Receiver()
    processes: list[Process] = []
    with fresh_postgres("fleet_alerts", lambda problem: missing_service(problem)) as url:
        try:
            broker = Broker("mosquitto", work)
            processes.append(broker.process)
            broker.start()
            settings = dict(keepalive="5", sweep_interval="0.2", sweep_lease="2", alert_interval="0.2",
                            alert_backoff="1", alert_timeout=str(TIMEOUT), alert_concurrency=str(CONCURRENCY),
                            alert_secret=GLOBAL_SECRET, alert_rules=_rules(receiver))
            for name in ("a", "b"):
                (work / name).mkdir()
            a = Controller(broker, work / "a", database_url=url, **settings)
            processes.append(a.process)
            a.start()
            b = Controller(broker, work / "b", database_url=url, admin_token=a.admin_token, **settings)
            processes.append(b.process)
            b.start()
            fleet = Fleet(broker, a, b, receiver, url, work, processes)
            fleet.device(WORKER)
            a.wait_device(WORKER, "online", timeout=30)
            yield fleet
        finally:
            receiver.close()
            for process in processes:
                process.kill()


def _signed(entry: Any, secret: str) -> dict[str, Any]:
    """The body of a received delivery, after checking its signature by the documented algorithm."""
    header = entry.headers["x-fleet-signature"]
    parts = dict(item.split("=", 1) for item in header.split(","))
    expected = hmac.new(secret.encode(), parts["t"].encode() + b"." + entry.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(parts["v1"], expected), "signature does not match"
    assert abs(time.time() - int(parts["t"])) < 300
    assert verify_signature(secret.encode(), entry.body, header)
    assert not verify_signature(b"another-secret-0123456", entry.body, header)
    body: dict[str, Any] = json.loads(entry.body)
    assert entry.headers["x-fleet-delivery"] == body["id"]
    return body


def _alerts(controller: Controller, **params: Any) -> list[dict[str, Any]]:
    response = controller.api.get("/api/v1/alerts", params=params)
    assert response.status_code == 200, response.text
    return list(response.json())


def _test_alert(controller: Controller, rule: str) -> str:
    response = controller.api.post("/api/v1/alerts/test", json={"rule": rule})
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def _rows(database_url: str, subject: str) -> int:
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            return int(connection.execute(text("SELECT COUNT(*) FROM alert_deliveries WHERE subject = :s"),
                                          {"s": subject}).scalar_one())
    finally:
        engine.dispose()


def _drain(stream: Stream) -> list[tuple[str, dict[str, Any]]]:
    """Every event the stream has read so far."""
    events = []
    while not stream.events.empty():
        events.append(stream.events.get_nowait())
    return events


def test_offline_alert_once_signed_with_two_controllers(fleet: Fleet) -> None:
    device_id = f"al-off-{time.monotonic_ns() % 10**9}"
    device = fleet.device(device_id)
    fleet.a.wait_device(device_id, "online", timeout=30)
    # Whichever controller holds the alert lease raises it, and streams it as an `alert` event.
    streams = [Stream(str(c.api.base_url), "kinds=alert", fleet.a.admin_token) for c in (fleet.a, fleet.b)]
    device.kill()
    fleet.a.wait_device(device_id, "offline", timeout=30)

    def received() -> list[Any]:
        return [r for r in fleet.receiver.of("/offline") if json.loads(r.body)["subject"] == device_id]

    first = wait_for(received, 30, 0.05, f"the offline alert of {device_id}")[0]
    body = _signed(first, SECRET)
    assert body["kind"] == "device_offline" and body["rule"] == "offline"
    assert body["data"]["device_id"] == device_id
    # Both controllers look every 0.2 s: 15 passes each, and still one delivery.
    wait_for(lambda: all(_alerts(c, rule="offline")[0]["state"] == "delivered" for c in (fleet.a, fleet.b)), 10)
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        assert len(received()) == 1, "the alert was sent twice"
        time.sleep(0.1)
    assert _rows(fleet.database_url, device_id) == 1
    streamed: list[dict[str, Any]] = []

    def heard() -> list[dict[str, Any]]:
        streamed.extend(data for stream in streams for kind, data in _drain(stream)
                        if kind == "alert" and data["device_id"] == device_id)
        return streamed

    wait_for(heard, 10, what="the alert on the push stream")
    for stream in streams:
        stream.close()
    assert [(d["rule"], d["message"]) for d in streamed] == [("device_offline", body["summary"])]
    mine = [row for row in _alerts(fleet.b, rule="offline") if row["subject"] == device_id]
    assert len(mine) == 1 and mine[0]["attempts"] == 1 and mine[0]["id"] == body["id"]


def test_failing_receiver_gets_it_on_the_third_attempt(fleet: Fleet) -> None:
    delivery = _test_alert(fleet.a, "flaky")

    def attempts() -> list[Any]:
        return [r for r in fleet.receiver.of("/flaky") if r.headers.get("x-fleet-delivery") == delivery]

    got = wait_for(lambda: len(attempts()) >= 3 and attempts(), 30, 0.05, "three attempts")
    assert [r.answered for r in got] == [500, 500, 200]
    gaps = [later.at - earlier.at for earlier, later in zip(got, got[1:])]
    print(f"gaps between attempts: {[round(g, 2) for g in gaps]} s (backoff 1 s, then 2 s, ±25 %)")
    assert gaps[0] >= 0.75 and gaps[1] >= 1.5, gaps
    row = wait_for(lambda: (r := [x for x in _alerts(fleet.a, rule="flaky") if x["id"] == delivery])
                   and r[0]["state"] == "delivered" and r[0], 10)
    assert row["attempts"] == 3 and row["last_status"] == 200
    _signed(got[-1], GLOBAL_SECRET)
    time.sleep(1)
    assert len(attempts()) == 3


def _median_latency(controller: Controller, path: str = "/healthz", count: int = 20) -> float:
    times = []
    for _ in range(count):
        started = time.perf_counter()
        assert controller.api.get(path).status_code == 200
        times.append(time.perf_counter() - started)
    return statistics.median(times)


@pytest.mark.serial  # compares request latencies: run alone (tests/run.sh)
def test_hanging_receiver_slows_nothing(fleet: Fleet) -> None:
    fleet.receiver.behaviour.release.clear()
    before = {c.port: _median_latency(c) for c in (fleet.a, fleet.b)}
    start = len(fleet.receiver.of("/hang"))
    for _ in range(CONCURRENCY + 2):
        _test_alert(fleet.a, "hang")
    wait_for(lambda: len(fleet.receiver.of("/hang")) >= start + CONCURRENCY, 20, 0.05, "every request slot hanging")
    hung_at = time.monotonic()
    try:
        during = {c.port: _median_latency(c) for c in (fleet.a, fleet.b)}
        alerts_api = _median_latency(fleet.a, "/api/v1/alerts?limit=20")
        task = fleet.a.create_task(WORKER, "echo", params={"message": "still recording"})
        done = fleet.b.wait_task(task["id"], timeout=30)
        measured_in = time.monotonic() - hung_at
    finally:
        fleet.receiver.behaviour.release.set()
    print(f"median GET /healthz before {[round(v * 1000, 1) for v in before.values()]} ms, while the webhook hangs "
          f"{[round(v * 1000, 1) for v in during.values()]} ms; GET /api/v1/alerts {alerts_api * 1000:.1f} ms; "
          f"measured within {measured_in:.1f} s of the hang")
    assert done["status"] == "succeeded"
    assert measured_in < TIMEOUT, "the measurement outlasted the hang; it proves nothing"
    # Blocked behind the webhook, a request would wait seconds (the hang lasts TIMEOUT = 8 s);
    # the slack absorbs the noise of a 2-core machine shared with other jobs (medians of 4–97 ms).
    for port, latency in during.items():
        assert latency < 3 * before[port] + 0.25, (before, during)


def test_timed_out_task_raises_task_failed(fleet: Fleet) -> None:
    task = fleet.a.create_task(WORKER, "sleep", params={"seconds": 5, "steps": 5}, timeout=0.5)
    ended = fleet.a.wait_task(task["id"], timeout=30)
    assert ended["status"] == "timed_out"
    got = wait_for(lambda: [r for r in fleet.receiver.of("/failed") if json.loads(r.body)["subject"] == task["id"]],
                   20, 0.05, "the task_failed alert")
    body = _signed(got[0], GLOBAL_SECRET)
    assert body["kind"] == "task_failed" and body["data"]["status"] == "timed_out" and body["data"]["type"] == "sleep"
    echo = fleet.a.create_task(WORKER, "echo", params={"message": "fine"})
    fleet.a.wait_task(echo["id"], timeout=30)
    assert not [r for r in fleet.receiver.of("/failed") if json.loads(r.body)["subject"] == echo["id"]]


def test_expired_account_raises_an_alert(fleet: Fleet) -> None:
    name = f"al-acct-{time.monotonic_ns() % 10**9}"
    response = fleet.a.api.post("/api/v1/accounts", json={"name": name, "platform": "reference", "device_id": WORKER})
    assert response.status_code == 201, response.text
    engine = create_engine(fleet.database_url)
    try:
        with engine.begin() as connection:  # what apply_outcome does when a logged-in account's task says logged out
            connection.execute(text("UPDATE accounts SET login_status = 'expired', status_task_id = 'probe-task' "
                                    "WHERE name = :n"), {"n": name})
    finally:
        engine.dispose()
    got = wait_for(lambda: [r for r in fleet.receiver.of("/expired") if json.loads(r.body)["subject"] == name],
                   20, 0.05, "the account_login_expired alert")
    body = _signed(got[0], GLOBAL_SECRET)
    assert body["kind"] == "account_login_expired" and body["data"]["platform"] == "reference"
    assert body["data"]["task_id"] == "probe-task"


def test_pending_delivery_survives_a_restart(fleet: Fleet) -> None:
    behaviour = fleet.receiver.behaviour
    behaviour.down.set()
    delivery = _test_alert(fleet.a, "down")

    def attempts() -> list[Any]:
        return [r for r in fleet.receiver.of("/down") if r.headers.get("x-fleet-delivery") == delivery]

    wait_for(attempts, 20, 0.05, "a first, failed attempt")
    # Its outcome recorded (else the row stays claimed for FLEET_ALERT_TIMEOUT + 30 s after the kill).
    wait_for(lambda: [x for x in _alerts(fleet.a, rule="down") if x["id"] == delivery and x["last_status"] == 503],
             20, 0.05, "the failed attempt recorded")
    fleet.a.process.kill()
    fleet.b.process.kill()
    restarted_at = time.monotonic()
    behaviour.down.clear()
    try:
        fleet.a.start()
        got = wait_for(lambda: [r for r in attempts() if r.answered == 200], 60, 0.05, "the delivery after the restart")
    finally:
        fleet.b.start()
    assert got[0].at > restarted_at and len(got) == 1
    assert all(r.answered == 503 for r in attempts() if r.at < restarted_at)
    row = wait_for(lambda: (r := [x for x in _alerts(fleet.a, rule="down") if x["id"] == delivery])
                   and r[0]["state"] == "delivered" and r[0], 10)
    assert row["attempts"] == len(attempts())
