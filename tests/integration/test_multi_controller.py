"""Two controllers on one PostgreSQL database (issue 14), as real processes on a real broker
with real `fleet device` daemons running `append` tasks (a side effect never run twice):

- (a) with default settings they get client ids of their own and keep their broker links
  (no disconnect in their logs, /healthz ok); with one id forced on both, /healthz says why;
- (b) one SIGKILLed while tasks created on both are in flight: every task ends, none ran
  twice, none was recorded twice, and a device-side timer (a silent device's task timeout)
  fires once; tasks the dead one left unsent go out through the survivor within seconds;
- (c) both started at the same moment on a fresh database both come up, with no
  UniqueViolation or traceback in their logs (the migrations run under a lock);
- (d) a controller whose broker link is cut still accepts tasks, and they run through the other.

Each scenario prints: tasks / final / succeeded / ran twice / recorded twice / lost.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from schemas.events import FINAL_STATUSES
from tests.harness import Broker, Controller, Device, Process, wait_for
from tests.netproxy import TcpProxy

pytestmark = pytest.mark.integration

DEVICE_IDS = ["mc-1", "mc-2"]
DISCONNECT_LINE = "disconnected from the MQTT broker"
# Re-sends after silence come late here: only the multi-controller paths may rescue a task.
SETTINGS = dict(keepalive="5", sweep_interval="0.2", task_timeout_grace="1", task_resend_after="300",
                reconnect_min_delay="0.2", reconnect_max_delay="1")


@dataclass
class Pair:
    broker: Broker
    a: Controller
    b: Controller
    devices: dict[str, Device]
    database_url: str
    work: Path
    processes: list[Process]


def _controller(broker: Broker, work: Path, url: str, processes: list[Process], token: str | None = None,
                **settings: Any) -> Controller:
    work.mkdir(parents=True, exist_ok=True)
    controller = Controller(broker, work, database_url=url, admin_token=token, own_client_id=False,
                            **{**SETTINGS, **settings})
    processes.append(controller.process)
    return controller


def start_together(*controllers: Controller) -> None:
    """Start the processes at the same moment and wait until each is healthy."""
    errors: list[BaseException] = []

    def run(controller: Controller) -> None:
        try:
            controller.start()
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(c,)) for c in controllers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors[0]


@pytest.fixture
def pair(broker: Broker, tmp_path: Path, postgres_url: str, _processes: list[Process]) -> Iterator[Pair]:
    a = _controller(broker, tmp_path / "a", postgres_url, _processes)
    a.start()
    b = _controller(broker, tmp_path / "b", postgres_url, _processes, token=a.admin_token)
    b.start()
    devices = {}
    for device_id in DEVICE_IDS:
        device = Device(device_id, broker, tmp_path, keepalive="2", max_concurrency="4",
                        reconnect_min_delay="0.2", reconnect_max_delay="1")
        _processes.append(device.process)
        device.start()
        devices[device_id] = device
    for device_id in DEVICE_IDS:
        a.wait_device(device_id, "online", timeout=30)
        b.wait_device(device_id, "online", timeout=30)
    yield Pair(broker, a, b, devices, postgres_url, tmp_path, _processes)


# ---- counting ---------------------------------------------------------------------------------


def submit(controller: Controller, count: int, tag: str, seconds: float = 0.3) -> list[str]:
    ids = []
    for index in range(count):
        params = {"line": f"{tag}{index}", "before": seconds / 3, "after": seconds * 2 / 3}
        ids.append(controller.create_task(DEVICE_IDS[index % len(DEVICE_IDS)], "append", params=params)["id"])
    return ids


def submit_batch(controller: Controller, count: int, tag: str) -> list[str]:
    """One POST of `count` tasks: the controller publishes them one after another after the commit."""
    bodies = [{"device_id": DEVICE_IDS[index % len(DEVICE_IDS)], "type": "append",
               "params": {"line": f"{tag}{index}", "before": 0.05, "after": 0.05}} for index in range(count)]
    response = controller.api.post("/api/v1/tasks/batch", json={"tasks": bodies})
    assert response.status_code == 201, response.text
    return [task["id"] for task in response.json()["items"]]


def settle(controller: Controller, task_ids: list[str], timeout: float = 60) -> dict[str, dict[str, Any]]:
    """Every task final (else fail naming the open ones)."""
    found: dict[str, dict[str, Any]] = {}

    def done() -> bool:
        for task_id in task_ids:
            if task_id not in found or found[task_id]["status"] not in FINAL_STATUSES:
                task = controller.task(task_id)
                if task is None or task["status"] not in FINAL_STATUSES:
                    return False
                found[task_id] = task
        return True

    try:
        wait_for(done, timeout, 0.25, "every task final")
    except AssertionError:
        open_ = {i: (controller.task(i) or {}).get("status") for i in task_ids if i not in found}
        raise AssertionError(f"{len(open_)} task(s) never finished: {dict(list(open_.items())[:10])}") from None
    return found


def journal_runs(device: Device) -> Counter[str]:
    path = device.data_dir / f"journal-{device.id}.sqlite3"
    with sqlite3.connect(path) as db:
        return Counter(key for (key,) in db.execute("SELECT task_id FROM executions"))


def appended(device: Device) -> Counter[str]:
    path = device.data_dir / f"appended-{device.id}.log"
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    return Counter(line.split("\t", 1)[0] for line in lines)


def recorded_twice(database_url: str, task_ids: list[str]) -> list[str]:
    """Tasks with a timeline event recorded twice: the same (attempt, seq, kind), or two final
    events of one attempt (a double state transition)."""
    finals = [status for status in FINAL_STATUSES]
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            same = connection.execute(text(
                "SELECT task_id FROM task_events WHERE task_id = ANY(:ids) "
                "GROUP BY task_id, attempt, seq, event HAVING COUNT(*) > 1"), {"ids": task_ids}).scalars().all()
            ended = connection.execute(text(
                "SELECT task_id FROM task_events WHERE task_id = ANY(:ids) AND applied AND event = ANY(:finals) "
                "GROUP BY task_id, attempt HAVING COUNT(*) > 1"), {"ids": task_ids, "finals": finals}).scalars().all()
    finally:
        engine.dispose()
    return sorted(set(same) | set(ended))


def check(pair: Pair, tasks: dict[str, dict[str, Any]], scenario: str, expect_success: bool = True) -> None:
    runs: Counter[str] = Counter()
    lines: Counter[str] = Counter()
    for device in pair.devices.values():
        runs += journal_runs(device)
        lines += appended(device)
    ids = list(tasks)
    twice = sorted(i for i in ids if runs[i] > 1 or lines[i] > 1)
    doubled = recorded_twice(pair.database_url, ids)
    final = [i for i, t in tasks.items() if t["status"] in FINAL_STATUSES]
    succeeded = [i for i, t in tasks.items() if t["status"] == "succeeded"]
    lost = [i for i in succeeded if lines[i] != 1]
    print(f"\n[{pair.broker.kind}] {scenario}: tasks {len(ids)} / final {len(final)} / succeeded {len(succeeded)} / "
          f"ran twice {len(twice)} / recorded twice {len(doubled)} / lost {len(lost)}")
    assert not twice, f"tasks run twice: {twice[:10]}"
    assert not doubled, f"tasks recorded twice: {doubled[:10]}"
    assert not lost, f"succeeded tasks whose line is missing: {lost[:10]}"
    counted_twice = [i for i, t in tasks.items() if t["attempt"] != 1]  # none has retries
    assert not counted_twice, f"tasks whose attempt went up: {counted_twice[:10]}"
    if expect_success:
        assert len(succeeded) == len(ids), {i: t["status"] for i, t in tasks.items() if t["status"] != "succeeded"}


def disconnects(controller: Controller) -> int:
    return controller.process.output().count(DISCONNECT_LINE)


# ---- scenarios --------------------------------------------------------------------------------


def test_default_client_ids_do_not_clash(pair: Pair) -> None:
    """(a) Default settings: each controller has its own id, kept across a restart with its session."""
    ids = {c.api.get("/healthz").json()["mqtt_client_id"] for c in (pair.a, pair.b)}
    assert len(ids) == 2 and all(i.startswith("fleet-controller-") for i in ids), ids
    deadline = time.monotonic() + 8  # a clash knocks a controller off about once a second
    while time.monotonic() < deadline:
        for controller in (pair.a, pair.b):
            health = controller.api.get("/healthz").json()
            assert health["status"] == "ok" and health["mqtt_connected"], health
        time.sleep(0.2)
    tasks = settle(pair.b, submit(pair.a, 4, "a") + submit(pair.b, 4, "b"))
    counts = [disconnects(c) for c in (pair.a, pair.b)]
    check(pair, tasks, f"default client ids, disconnect lines {counts}")
    assert counts == [0, 0], counts
    before = pair.a.api.get("/healthz").json()["mqtt_client_id"]
    pair.a.process.stop()
    pair.a.start()
    assert pair.a.api.get("/healthz").json()["mqtt_client_id"] == before
    assert "session present: True" in pair.a.process.output(), pair.a.process.output()[-2000:]


def test_shared_client_id_is_reported(broker: Broker, tmp_path: Path, postgres_url: str,
                                      _processes: list[Process]) -> None:
    """(a) One client id forced on both: /healthz stops saying ok and names the clash."""
    a = _controller(broker, tmp_path / "a", postgres_url, _processes, controller_client_id="same-id")
    b = _controller(broker, tmp_path / "b", postgres_url, _processes, token=a.admin_token,
                    controller_client_id="same-id")
    a.start()
    b.start()

    def reported() -> dict[str, Any] | None:
        for controller in (a, b):
            response = controller.api.get("/healthz")
            health = response.json()
            if health["status"] == "unhealthy" and "client id" in (health["reason"] or ""):
                assert response.status_code == 503 and health["problem"] == "broker_flapping", health
                return health
        return None

    health = wait_for(reported, 60, 0.2, "/healthz naming the client id clash")
    print(f"\n[{broker.kind}] shared client id: {health['mqtt_disconnects_recent']} disconnects/min: {health['reason']}")


def test_controller_killed_with_tasks_in_flight(pair: Pair) -> None:
    """(b) A SIGKILL with tasks created on both in flight, and a silent device's timeout pending."""
    sleeper = Device("mc-sleeper", pair.broker, pair.work, keepalive="2")
    pair.processes.append(sleeper.process)
    sleeper.start()
    pair.b.wait_device("mc-sleeper", "online", timeout=30)
    timer = pair.a.create_task("mc-sleeper", "sleep", params={"seconds": 120, "steps": 1}, timeout=3)["id"]
    pair.b.wait_task(timer, {"running"}, timeout=30)
    sleeper.kill()  # silent from now on: only the sweeping controller's timer can end the task
    wait_for(lambda: pair.a.api.get("/healthz").json()["sweeper"], 30, 0.2, "A holding the sweep lease")
    ids = submit(pair.a, 20, "a") + submit(pair.b, 20, "b")
    ids += submit_batch(pair.a, 40, "c")  # still being sent when it dies
    pair.a.process.kill()
    killed_at = time.monotonic()
    unsent = sum((pair.b.task(i) or {}).get("status") == "queued" for i in ids)
    wait_for(lambda: pair.b.api.get("/healthz").json()["sweeper"], 60, 0.1, "the survivor holding the sweep lease")
    takeover = time.monotonic() - killed_at
    tasks = settle(pair.b, ids, timeout=90)
    print(f"\n[{pair.broker.kind}] {unsent} task(s) still queued (no ack recorded) when A died; the lease passed in {takeover:.1f} s; "
          f"all final {time.monotonic() - killed_at:.1f} s after the kill")
    check(pair, tasks, "controller SIGKILL with tasks in flight")
    timed = pair.b.wait_task(timer, timeout=60)
    events = [e["event"] for e in timed["events"]]
    print(f"[{pair.broker.kind}] silent device's task: {timed['status']}, timed_out events {events.count('timed_out')}")
    assert timed["status"] == "timed_out" and events.count("timed_out") == 1, events


def test_started_together_on_a_fresh_database(broker: Broker, tmp_path: Path, postgres_url: str,
                                              _processes: list[Process]) -> None:
    """(c) Both processes started at once on an empty database: both migrate, both come up."""
    a = _controller(broker, tmp_path / "a", postgres_url, _processes)
    b = _controller(broker, tmp_path / "b", postgres_url, _processes, token=a.admin_token)
    start_together(a, b)
    for controller in (a, b):
        health = controller.api.get("/healthz").json()
        assert health["status"] == "ok", health
        output = controller.process.output()
        assert "UniqueViolation" not in output and "Traceback" not in output, output[-3000:]
    device = Device("mc-1", broker, tmp_path, keepalive="2")
    _processes.append(device.process)
    device.start()
    a.wait_device("mc-1", "online", timeout=30)
    task = a.create_task("mc-1", "append", params={"line": "x"})["id"]
    tasks = settle(b, [task])
    pair = Pair(broker, a, b, {"mc-1": device}, postgres_url, tmp_path, _processes)
    check(pair, tasks, "started together on a fresh database")
    for controller in (a, b):
        output = controller.process.output()
        assert "UniqueViolation" not in output and "Traceback" not in output, output[-3000:]


def test_task_accepted_without_broker_link(broker: Broker, tmp_path: Path, postgres_url: str,
                                           _processes: list[Process]) -> None:
    """(d) A controller whose broker link is cut answers 201; the other one sends the tasks."""
    proxy = TcpProxy(broker.port)
    proxy.start()
    try:
        a = _controller(broker, tmp_path / "a", postgres_url, _processes, mqtt_url=proxy.url)
        b = _controller(broker, tmp_path / "b", postgres_url, _processes, token=a.admin_token)
        start_together(a, b)
        devices = {}
        for device_id in DEVICE_IDS:
            devices[device_id] = Device(device_id, broker, tmp_path, keepalive="2")
            _processes.append(devices[device_id].process)
            devices[device_id].start()
            b.wait_device(device_id, "online", timeout=30)
        pair = Pair(broker, a, b, devices, postgres_url, tmp_path, _processes)
        proxy.cut()
        ids = submit(a, 4, "cut")  # A does not know yet: its publishes go nowhere
        wait_for(lambda: not a.api.get("/healthz").json()["mqtt_connected"], 30, 0.2, "A noticing the cut")
        ids += submit(a, 4, "down")  # A knows it has no link, and still answers 201
        tasks = settle(b, ids, timeout=60)
        proxy.restore()  # A's paho sends its unacked copies again: answered from the journals
        wait_for(lambda: a.api.get("/healthz").json()["mqtt_connected"], 30, 0.2, "A connected again")
        marker = a.create_task(DEVICE_IDS[0], "append", params={"line": "after"})["id"]
        tasks |= settle(b, [marker])
        check(pair, tasks, "tasks accepted by a controller without a broker link")
    finally:
        proxy.close()


def test_shared_subscriptions_split_the_work(tmp_path: Path, postgres_url: str, _processes: list[Process]) -> None:
    """(e) Mosquitto, FLEET_SHARED_SUBSCRIPTION_GROUP on both: each records a share of the
    results, and when one is SIGKILLed nothing is lost (what was in flight to it is sent
    again to the device, which answers from its journal)."""
    broker = Broker("mosquitto", tmp_path)
    _processes.append(broker.process)
    broker.start()
    shared = dict(shared_subscription_group="fleet", task_resend_after="3")
    a = _controller(broker, tmp_path / "a", postgres_url, _processes, **shared)
    b = _controller(broker, tmp_path / "b", postgres_url, _processes, token=a.admin_token, **shared)
    start_together(a, b)
    devices = {}
    for device_id in DEVICE_IDS:
        devices[device_id] = Device(device_id, broker, tmp_path, keepalive="2", max_concurrency="4")
        _processes.append(devices[device_id].process)
        devices[device_id].start()
        b.wait_device(device_id, "online", timeout=30)
    pair = Pair(broker, a, b, devices, postgres_url, tmp_path, _processes)
    ids = submit(a, 15, "a") + submit(b, 15, "b")
    tasks = settle(b, ids)
    events = _device_events(postgres_url, ids)
    shares = [c.api.get("/healthz").json()["ingest_messages"] for c in (a, b)]
    print(f"\n[mosquitto] shared subscriptions: {events} device events; recorded by A {shares[0]}, by B {shares[1]} "
          "(messages incl. acks and statuses)")
    assert all(0 < share < events for share in shares), (shares, events)
    ids += submit(a, 10, "c") + submit_batch(b, 20, "d")
    b.process.kill()
    tasks = settle(a, ids, timeout=90)
    check(pair, tasks, "shared subscriptions, one controller SIGKILLed")


def _device_events(database_url: str, task_ids: list[str]) -> int:
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            return int(connection.execute(text(
                "SELECT COUNT(*) FROM task_events WHERE task_id = ANY(:ids) AND event IN "
                "('accepted', 'started', 'progress', 'succeeded', 'failed', 'rejected')"), {"ids": task_ids}).scalar() or 0)
    finally:
        engine.dispose()
