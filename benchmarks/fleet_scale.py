"""Measure the fleet at fleet size: thousands of simulated devices, a broadcast, idle load.

For each scenario `<broker>:<devices>` it starts real processes (the broker with the
project's configuration, a controller on SQLite), a raw paho subscriber on the same broker
(the floor: no SQL, it only counts births and results), and N simulated devices
(`fleet simulate --processes`'s library, `device/sim_pool.py`: one MQTT connection each,
heartbeats every 30 s, spread over `--processes` worker processes so the load generator is
not the bottleneck). It measures, side by side in one run:

- online: time from the first connection until every device was born (the simulator), and
  from the LAST birth until the raw subscriber has seen every birth and until the
  controller's REST API shows every device online (the controller's lag behind the births);
- broadcast (`echo` to all, REST `POST /api/v1/broadcasts`): time until every device received
  it, until the raw subscriber saw every `succeeded`, until every result is recorded in SQL,
  and how many were never recorded (lost) by the deadline;
- presence: the most devices REST showed offline at any moment while all were connected;
- idle: the controller's CPU % and RSS over `--idle-seconds` with every device connected.

Then, once, the device daemon (`fleet device`, a real process) idling: RSS and CPU %.

    .venv/bin/python -m benchmarks.fleet_scale --scenarios mosquitto:1000 mosquitto:10000 amqtt:1000

Writes benchmarks/results/fleet_scale.md and, with matplotlib, fleet_scale.png. Needs an
open-file limit above the largest N (`ulimit -n`; raised here where allowed).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psutil

from broker.connection import BrokerAddress, create_client
from cli.simulate import raise_open_file_limit
from device.sim_pool import FleetPool
from tests.harness import Broker, Controller, Device, wait_for
from tests.ports import free_port

RESULTS = Path(__file__).parent / "results"


class RawFloor:
    """A paho subscriber that only counts: distinct births and distinct `succeeded` results."""

    def __init__(self, broker: Broker) -> None:
        self.births: set[str] = set()
        self.succeeded: set[str] = set()
        self.births_done: float | None = None
        self.results_done: float | None = None
        self.expect_births = 0
        self.expect_results = 0
        self.prefix = "-"
        self._subscribed = threading.Event()
        self.client = create_client(BrokerAddress.from_url(broker.url), f"raw-floor-{free_port()}")
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe([("devices/+/status", 1), ("devices/+/results", 1)])
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", broker.port, keepalive=60)
        self.client.loop_start()
        assert self._subscribed.wait(10), "the raw subscriber could not subscribe"

    def _on_message(self, _c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        data = json.loads(message.payload or b"{}")
        if message.topic.endswith("/status"):
            if data.get("state") == "online":
                self.births.add(data["device_id"])
                if self.births_done is None and len(self.births) >= self.expect_births > 0:
                    self.births_done = time.time()  # wall clock, as the simulator's births
        elif data.get("event") == "succeeded" and str(data.get("task_id", "")).startswith(self.prefix):
            self.succeeded.add(data["task_id"])
            if self.results_done is None and len(self.succeeded) >= self.expect_results > 0:
                self.results_done = time.monotonic()

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@dataclass
class Outcome:
    broker: str
    devices: int
    processes: int = 1  # simulator worker processes
    connected_s: float = -1.0  # simulator: first connect → every device born
    raw_online_s: float = -1.0  # last birth → the raw subscriber saw every birth
    controller_online_s: float = -1.0  # last birth → REST shows every device online
    received_s: float = -1.0  # broadcast POST → every device received it
    raw_results_s: float = -1.0
    recorded_s: float = -1.0  # broadcast POST → every result recorded in SQL
    raw_results: int = 0
    recorded: int = 0
    lost: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    max_offline: int = 0
    births_cpu_ms: float = -1.0  # controller CPU per device from the first connect to all online in REST
    broadcast_cpu_ms: float = -1.0  # controller CPU per device from the POST to every result recorded
    idle_cpu_pct: float = -1.0
    idle_rss_mb: float = -1.0
    connection_losses: int = 0
    rest_errors: int = 0  # REST answers other than 200 while polling


def _online(controller: Controller, status: str = "online") -> int:
    """Devices REST shows in `status`; -1 when REST answered an error."""
    response = controller.api.get("/api/v1/devices", params={"status": status, "limit": 1}, timeout=120)
    return int(response.json()["total"]) if response.status_code == 200 else -1


def _retry(count: Callable[[], int], tries: int = 120) -> int:
    """`count()` once REST answers it (it returns -1 on an error answer), else -1."""
    for _ in range(tries):
        value = count()
        if value >= 0:
            return value
        time.sleep(0.5)
    return -1


def _since(start: float, done: float | None) -> float:
    return round(done - start, 2) if done is not None else -1.0


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def measure(kind: str, count: int, idle_seconds: float, deadline: float, processes: int) -> Outcome:
    out = Outcome(kind, count, processes)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        broker = Broker(kind, work)
        broker.start()
        floor = RawFloor(broker)
        controller = Controller(broker, work)
        controller.start()
        process = psutil.Process(controller.process.popen.pid)  # type: ignore[union-attr]
        sim = FleetPool(broker.url, count, processes, prefix="sim", heartbeat=30.0, seed=1)
        try:
            _measure_online(out, controller, process, sim, floor, deadline)
            time.sleep(2)  # the last births' follow-ups
            _measure_broadcast(out, controller, process, sim, floor, deadline)
            time.sleep(5)  # let the last follow-ups finish
            _measure_idle(out, controller, process, idle_seconds)
            out.connection_losses = sim.counters.get("connection_losses", 0)
        finally:
            sim.stop()
            floor.close()
            controller.process.kill()
            broker.kill()
    return out


def _measure_online(out: Outcome, controller: Controller, process: psutil.Process, sim: FleetPool,
                    floor: RawFloor, deadline: float) -> None:
    """Every device connected, then seen online in REST: the lag behind the last birth."""
    count = out.devices
    floor.expect_births = count
    started, cpu_before = time.monotonic(), _cpu(process)
    sim.start()
    assert sim.wait_online(deadline), f"the simulator could not connect every device: {sim.last_error}"
    out.connected_s = round(time.monotonic() - started, 2)
    wait_for(lambda: _online(controller) >= count, deadline, 0.2, f"{count} devices online in REST")
    last_birth = sim.last_birth_at
    out.controller_online_s = round(time.time() - last_birth, 2)
    out.raw_online_s = _since(last_birth, floor.births_done)
    out.max_offline = _online(controller, "offline")
    out.births_cpu_ms = round(1000 * (_cpu(process) - cpu_before) / count, 3)


def _measure_broadcast(out: Outcome, controller: Controller, process: psutil.Process, sim: FleetPool,
                       floor: RawFloor, deadline: float) -> None:
    """One `echo` broadcast to every device: received, recorded in SQL, lost."""
    count = out.devices
    cpu_before = _cpu(process)
    broadcast = controller.api.post("/api/v1/broadcasts", json={"type": "echo"}, timeout=120).json()
    posted = time.monotonic()
    floor.prefix, floor.expect_results = broadcast["id"], count
    received: float | None = None
    offline_checked = 0.0

    def recorded() -> int:
        nonlocal received, offline_checked
        if received is None and sim.counters.get("tasks_received", 0) >= count:
            received = time.monotonic()
        response = controller.api.get(f"/api/v1/broadcasts/{broadcast['id']}", timeout=120)
        if response.status_code != 200:  # e.g. 500 "database is locked" while the writer is busy
            out.rest_errors += 1
            return -1
        counts = response.json()["status_counts"]
        out.statuses = dict(counts)
        if time.monotonic() - offline_checked >= 1.0:
            out.max_offline = max(out.max_offline, _online(controller, "offline"))
            offline_checked = time.monotonic()
        return int(counts.get("succeeded", 0))

    # Polled every 0.2 s: every REST request is a SQLite transaction, so polling faster
    # would slow down what it measures.
    try:
        wait_for(lambda: recorded() >= count, deadline, 0.2, "every broadcast result recorded")
        out.recorded_s = round(time.monotonic() - posted, 2)
        out.broadcast_cpu_ms = round(1000 * (_cpu(process) - cpu_before) / count, 3)
    except AssertionError:
        pass
    out.recorded = _retry(recorded)
    out.lost = count - out.recorded
    out.received_s = _since(posted, received)
    out.raw_results_s = _since(posted, floor.results_done)
    out.raw_results = len(floor.succeeded)


def _measure_idle(out: Outcome, controller: Controller, process: psutil.Process, idle_seconds: float) -> None:
    """The controller's CPU and peak RSS with every device connected and nothing to do."""
    cpu, began, rss = _cpu(process), time.monotonic(), 0
    while time.monotonic() - began < idle_seconds:
        time.sleep(1)
        rss = max(rss, process.memory_info().rss)
    out.max_offline = max(out.max_offline, _online(controller, "offline"))
    out.idle_cpu_pct = round(100 * (_cpu(process) - cpu) / (time.monotonic() - began), 1)
    out.idle_rss_mb = round(rss / 1e6, 1)


def measure_daemon(seconds: float) -> tuple[float, float]:
    """A real `fleet device` idling on Mosquitto: (RSS MB, CPU %) over `seconds`."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        broker = Broker("mosquitto", work)
        broker.start()
        controller = Controller(broker, work)
        device = Device("idle-pc", broker, work)
        try:
            controller.start()
            device.start()
            controller.wait_device("idle-pc", "online", timeout=60)
            process = psutil.Process(device.process.popen.pid)  # type: ignore[union-attr]
            time.sleep(5)
            cpu, began, rss = _cpu(process), time.monotonic(), 0
            while time.monotonic() - began < seconds:
                time.sleep(1)
                rss = max(rss, process.memory_info().rss)
            return round(rss / 1e6, 1), round(100 * (_cpu(process) - cpu) / (time.monotonic() - began), 2)
        finally:
            for proc in (device.process, controller.process, broker.process):
                proc.kill()


def _table(outcomes: list[Outcome]) -> str:
    head = ("| broker | devices | sim processes | connected s | online after last birth: raw s | "
            "online after last birth: controller s | broadcast received s "
            "| results: raw s | results recorded s | recorded | lost | max offline | controller CPU ms per birth "
            "| controller CPU ms per broadcast task | controller idle CPU % | controller RSS MB |")
    rows = [head, "|" + "---|" * 16]
    for o in outcomes:
        rows.append(f"| {o.broker} | {o.devices} | {o.processes} | {o.connected_s} | {o.raw_online_s} | "
                    f"{o.controller_online_s} | "
                    f"{o.received_s} | {o.raw_results_s} ({o.raw_results}) | {o.recorded_s} | {o.recorded} | {o.lost} | "
                    f"{o.max_offline} | {o.births_cpu_ms} | {o.broadcast_cpu_ms} | {o.idle_cpu_pct} | {o.idle_rss_mb} |")
    return "\n".join(rows)


def _plot(outcomes: list[Outcome]) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot (pip install matplotlib)")
        return
    labels = [f"{o.broker}\n{o.devices}" for o in outcomes]
    series = {"online after last birth: raw": [o.raw_online_s for o in outcomes],
              "online after last birth: controller": [o.controller_online_s for o in outcomes],
              "results: raw": [o.raw_results_s for o in outcomes],
              "results recorded: controller": [o.recorded_s for o in outcomes]}
    fig, ax = plt.subplots(figsize=(8, 4.5))
    width = 0.8 / len(series)
    for n, (name, values) in enumerate(series.items()):
        ax.bar([i + n * width for i in range(len(outcomes))], [max(v, 0) for v in values], width, label=name)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(outcomes))], labels)
    ax.set_ylabel("seconds (0: never)")
    ax.set_title("Simulated fleet: all online, broadcast results (controller vs raw paho)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / "fleet_scale.png", dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenarios", nargs="+", default=["mosquitto:1000", "mosquitto:10000", "amqtt:1000"],
                        help="<broker>:<devices>, broker amqtt or mosquitto")
    parser.add_argument("--idle-seconds", type=float, default=60.0, help="controller idle sampling per scenario")
    parser.add_argument("--daemon-seconds", type=float, default=30.0, help="device daemon idle sampling (0: skip)")
    parser.add_argument("--deadline", type=float, default=300.0, help="seconds each phase may take before it counts as failed")
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 1, help="simulator worker processes")
    args = parser.parse_args()
    scenarios = [(kind, int(n)) for kind, n in (item.split(":", 1) for item in args.scenarios)]
    # The simulated devices' sockets are in this process; the broker (a child) inherits the limit.
    warning = raise_open_file_limit(max(n for _kind, n in scenarios))
    if warning:
        print("warning:", warning)
    outcomes = []
    for kind, count in scenarios:
        outcome = measure(kind, count, args.idle_seconds, args.deadline, args.processes)
        print(json.dumps(asdict(outcome)), flush=True)
        outcomes.append(outcome)
    daemon = measure_daemon(args.daemon_seconds) if args.daemon_seconds > 0 else None
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    RESULTS.mkdir(exist_ok=True)
    text = (f"Simulated devices (one MQTT connection each, heartbeat 30 s), a controller on SQLite and a raw paho "
            f"subscriber on the same broker, one run, commit {commit or 'unknown'}, 2 cores shared, loopback. "
            f"Times in seconds; -1 means not reached within {args.deadline:.0f} s. `connected`: simulator's first "
            f"connect → every device born; `online after last birth`: the simulator's last birth → all seen online "
            f"(the lag behind the births); broadcast columns from the POST. Idle over {args.idle_seconds:.0f} s with every device connected.\n\n{_table(outcomes)}\n")
    if daemon is not None:
        text += f"\nDevice daemon (`fleet device`) idle over {args.daemon_seconds:.0f} s: {daemon[0]} MB RSS, {daemon[1]} % CPU.\n"
    (RESULTS / "fleet_scale.md").write_text(text)
    print(text)
    _plot(outcomes)


if __name__ == "__main__":
    main()
