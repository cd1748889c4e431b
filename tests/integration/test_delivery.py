"""Nothing is lost whatever the broker drops (docs/architecture.md#promise-8-the-promises-hold-at-fleet-size),
with real processes:

- a Mosquitto whose queues hold 20 messages per client (it drops the rest, after PUBACKing their
  senders) and a burst of `append` tasks to real device daemons that stop reading while it is
  published (SIGSTOP, a test-only stand-in for a slow PC): every task ends final, and each
  device's file shows every task's line exactly once (nothing ran twice);
- results published while the controller is down wait in its persistent session on the broker
  (Mosquitto with persistence, restarted meanwhile; the embedded broker) and are all recorded
  when it comes back, more of them than Mosquitto's default queue of 1,000 would keep.
"""

from __future__ import annotations

import json
import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt
import pytest

from schemas.common import utcnow
from tests.harness import Broker, Controller, Device, Process, wait_for

pytestmark = pytest.mark.integration

TASKS = 100
QUEUE = 20
DEVICES = 3
RESULTS_WHILE_DOWN = 1200  # more than Mosquitto's default max_queued_messages (1,000)
SIMULATED = 30


def _count(controller: Controller, path: str, **params: str) -> int:
    """`total` of a REST listing; -1 while the controller cannot answer (starting, or busy recording)."""
    try:
        return int(controller.api.get(path, params={**params, "limit": "1"}, timeout=30).json()["total"])
    except httpx.TransportError:  # still starting, or too busy to answer in time
        return -1


def _lines(device: Device) -> list[str]:
    path = device.data_dir / f"appended-{device.id}.log"
    return [line.split("\t", 1)[0] for line in path.read_text().splitlines()] if path.exists() else []


def test_a_broker_that_drops_messages_loses_no_task_and_runs_none_twice(tmp_path: Path, _processes: list[Process]) -> None:
    # 1 in flight + 20 queued per client; a daemon that stops reading is sent ~34 tasks. Smaller
    # queues drop the re-sends too, round after round, and each lost round doubles the wait.
    broker = Broker("mosquitto", tmp_path, max_queued_messages=QUEUE, extra_conf="max_inflight_messages 1\n")
    _processes.append(broker.process)
    broker.start()
    controller = Controller(broker, tmp_path, keepalive="5", task_resend_after="0.2", sweep_interval="0.1")
    _processes.append(controller.process)
    controller.start()
    devices = [Device(f"pc-{n}", broker, tmp_path, keepalive="60", max_concurrency="4") for n in range(DEVICES)]
    for device in devices:
        _processes.append(device.process)
        device.start()
    for device in devices:
        controller.wait_device(device.id, "online", timeout=30)
    # The daemons stop reading their sockets while their tasks are published: more than the
    # broker's queue holds arrive for each, so it must drop some (what a slow client gets).
    for device in devices:
        assert device.process.popen is not None
        device.process.popen.send_signal(signal.SIGSTOP)

    def create(n: int) -> str:
        task = controller.create_task(devices[n % DEVICES].id, "append", params={"line": f"line {n}"})
        return str(task["id"])

    try:
        with ThreadPoolExecutor(8) as pool:  # concurrent REST clients
            ids = list(pool.map(create, range(TASKS)))
    finally:
        for device in devices:
            assert device.process.popen is not None
            device.process.popen.send_signal(signal.SIGCONT)

    wait_for(lambda: _count(controller, "/api/v1/tasks", status="succeeded") == TASKS, 90, 0.5,
             f"all {TASKS} tasks succeeded")
    appended = [task_id for device in devices for task_id in _lines(device)]
    assert sorted(appended) == sorted(ids), "every task's line written exactly once"
    assert all(device.executions(task_id) == 1 for device in devices for task_id in _lines(device))
    dropped = broker.process.log_path.read_text(errors="replace").count("being dropped")
    assert dropped > 0, "the broker was meant to drop messages; this test proved nothing"
    resent = controller.process.log_path.read_text(errors="replace").count("re-sent ")
    print(f"{TASKS} tasks: broker logged {dropped} drops, controller {resent} re-send passes")


def _birth(device_id: str) -> str:
    return json.dumps({"device_id": device_id, "state": "online", "session_id": "sim-s1", "at": utcnow().isoformat(),
                       "facts": {"name": device_id, "version": "0.1.0", "hostname": device_id, "os": "Linux",
                                 "python": "3.11", "task_types": ["echo"], "groups": [], "keepalive": 30}})


def _result(device_id: str, n: int) -> str:
    return json.dumps({"task_id": f"offline-{device_id}-{n}", "device_id": device_id, "event": "succeeded", "seq": 0,
                       "attempt": 1, "at": utcnow().isoformat(), "session_id": "sim-s1", "result": {"n": n}})


def _publish_all(port: int, messages: list[tuple[str, str, bool]]) -> None:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"sim-{port}")
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        infos = [client.publish(topic, payload, qos=1, retain=retain) for topic, payload, retain in messages]
        for info in infos:
            info.wait_for_publish(30)
    finally:
        client.loop_stop()
        client.disconnect()


@pytest.mark.parametrize("kind", ["amqtt", "mosquitto"])
def test_results_published_while_the_controller_is_down_are_recorded_when_it_is_back(
    kind: str, tmp_path: Path, _processes: list[Process]
) -> None:
    persistence = tmp_path / "mosquitto-data" if kind == "mosquitto" else None
    if persistence is not None:
        persistence.mkdir()
    broker = Broker(kind, tmp_path, persistence_dir=persistence)
    _processes.append(broker.process)
    broker.start()
    controller = Controller(broker, tmp_path, keepalive="5")
    _processes.append(controller.process)
    controller.start()
    device_ids = [f"sim-{n:02d}" for n in range(SIMULATED)]
    _publish_all(broker.port, [(f"devices/{d}/status", _birth(d), True) for d in device_ids])
    wait_for(lambda: _count(controller, "/api/v1/devices", status="online") == SIMULATED, 30, 0.2,
             "all simulated devices online")

    controller.process.kill()  # a crash: its session (clean_session off, fixed client id) stays on the broker
    _publish_all(broker.port, [(f"devices/{device_ids[n % SIMULATED]}/results", _result(device_ids[n % SIMULATED], n), False)
                               for n in range(RESULTS_WHILE_DOWN)])
    if kind == "mosquitto":  # the queue survives a broker restart too, in its persistence file
        broker.process.stop()
        broker.start()
    controller.process.start()  # not `start()`: its health check may time out while the backlog is recorded

    wait_for(lambda: _count(controller, "/api/v1/tasks", status="succeeded") == RESULTS_WHILE_DOWN, 90, 1.0,
             f"all {RESULTS_WHILE_DOWN} results recorded")
    sample = controller.task(f"offline-{device_ids[7]}-7")
    assert sample is not None and sample["result"] == {"n": 7} and sample["origin"] == "adhoc"
    assert "being dropped" not in broker.process.log_path.read_text(errors="replace")
