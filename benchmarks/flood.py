"""Measure what one device login flooding births and results does to the rest of the fleet.

For each broker kind it starts real processes (broker, controller with SQLite, N device
daemons) and a flooder (`tests/flooder.py`: one raw login publishing retained births with an
ever-new session id and results for ever-new task ids, QoS 1). Measured, in one run:

- the other devices' round trip (REST create → result recorded, the controller's
  `finished_at - created_at`), sequential `echo` tasks, idle and then during the flood;
- a burst of tasks for the other devices created as the flood starts: how many never finish
  (lost, must be 0);
- the longest a `GET /healthz` took during the flood, how long after the flood the ingest
  queue was empty, and how long until the controller showed the flooder's last birth;
- a raw paho subscriber on the same broker (the floor): how many of the flood's messages it
  received and how long after the flood it had them all.

    .venv/bin/python -m benchmarks.flood --births 4000 --results 4000 --seconds 2

Writes benchmarks/results/flood.md (tables) and, when matplotlib is installed,
benchmarks/results/flood.png.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from tests.flooder import Flooder
from tests.harness import Broker, Controller, Device, MqttProbe, Process, wait_for

RESULTS = Path(__file__).parent / "results"
FINAL = {"succeeded", "failed", "rejected", "timed_out", "canceled", "expired"}


@dataclass
class Run:
    kind: str
    idle: list[float] = field(default_factory=list)
    flood: list[float] = field(default_factory=list)
    sent: dict[str, Any] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)


class HealthWatch:
    """GETs /healthz every 50 ms in a thread; remembers the slowest answer."""

    def __init__(self, controller: Controller) -> None:
        self._controller, self.slowest, self._stop = controller, 0.0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            started = time.perf_counter()
            try:
                self._controller.api.get("/healthz", timeout=300)
            except Exception:  # a timeout is a stall as well: the slowest stays what it waited
                pass
            self.slowest = max(self.slowest, time.perf_counter() - started)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join(310)
        return self.slowest


def create(controller: Controller, device_id: str, message: str) -> str | None:
    """A new echo task's id, or None when REST refused it or the connection broke (counted as an error)."""
    try:
        response = controller.api.post("/api/v1/tasks", json={"device_id": device_id, "type": "echo",
                                                              "params": {"message": message}})
    except httpx.TransportError:
        return None
    return str(response.json()["id"]) if response.status_code == 201 else None


def task(controller: Controller, task_id: str) -> dict[str, Any] | None:
    """The task as REST shows it; None while it cannot be read (a broken connection is retried)."""
    try:
        return controller.task(task_id)
    except httpx.TransportError:
        return None


def round_trip(controller: Controller, device_id: str, n: int, timeout: float = 300) -> float:
    """ms from create to result recorded; `timeout` seconds (a lost task) when it never finished."""
    task_id = create(controller, device_id, str(n))
    if task_id is None:
        return timeout * 1000
    try:
        done = wait_for(lambda: (t := task(controller, task_id)) is not None and t["status"] == "succeeded" and t,
                        timeout, what=f"task {task_id} succeeded")
    except AssertionError:
        return timeout * 1000
    return (datetime.fromisoformat(done["finished_at"]) - datetime.fromisoformat(done["created_at"])).total_seconds() * 1000


def flood_phase(run: Run, controller: Controller, devices: list[str], flooder: Flooder, wire: MqttProbe,
                args: argparse.Namespace) -> None:
    watch = HealthWatch(controller)
    started = time.monotonic()
    flooder.start(args.births, args.results, args.seconds)
    created = [create(controller, devices[n % len(devices)], f"b{n}") for n in range(args.burst)]
    burst = [task_id for task_id in created if task_id is not None]
    run.figures["REST create errors"] = len(created) - len(burst)
    run.figures["burst created in s"] = round(time.monotonic() - started, 2)
    n = 0
    while (flooder.busy or len(run.flood) < args.rounds) and len(run.flood) < 10 * args.rounds:
        if time.monotonic() - started > args.grace:
            break
        run.flood.append(round_trip(controller, devices[n % len(devices)], n, args.grace))
        n += 1
    report = flooder.join(600)
    ended = time.monotonic()
    run.sent = {"births": report.births, "results": report.results, "seconds": round(report.seconds, 2)}
    expected = report.births + report.results + 1  # and the birth before the flood

    def flooded() -> int:
        return sum(1 for topic, _ in wire.raw_messages() if topic.startswith(f"devices/{flooder.device_id}/"))

    try:
        wait_for(lambda: flooded() >= expected, 60, what="the subscriber to see the whole flood")
        run.figures["subscriber all after s"] = round(time.monotonic() - ended, 2)
    except AssertionError:
        run.figures["subscriber all after s"] = "never"
    run.figures["subscriber received"] = f"{flooded()}/{expected}"

    def unfinished() -> list[str]:
        return [t for t in burst if (found := task(controller, t)) is None or found["status"] not in FINAL]

    try:
        wait_for(lambda: not unfinished(), args.grace, 0.5, "the burst's tasks final")
    except AssertionError:
        pass
    run.figures["burst lost"] = f"{len(unfinished())}/{len(burst)}"
    run.figures["burst final after s"] = round(time.monotonic() - started, 2)
    _settle(run, controller, flooder, ended, args.grace)
    run.figures["slowest /healthz s"] = round(watch.stop(), 2)


def _settle(run: Run, controller: Controller, flooder: Flooder, ended: float, grace: float) -> None:
    """How long after the flood the controller's queue drained and it showed the last birth."""
    def drained() -> bool:
        try:
            return controller.api.get("/healthz", timeout=300).json()["ingest_queue"] == 0
        except httpx.TransportError:
            return False

    def latest() -> bool:
        try:
            device = controller.device(flooder.device_id)
        except httpx.TransportError:
            return False
        return device is not None and device["session_id"] == flooder.report.last_session

    for name, check in (("queue empty after s", drained), ("last birth shown after s", latest)):
        try:
            wait_for(check, grace, 0.1, name)
            run.figures[name] = round(time.monotonic() - ended, 2)
        except AssertionError:
            run.figures[name] = f"> {round(time.monotonic() - ended)}"
    health = controller.api.get("/healthz").json()
    run.figures["throttled"] = health.get("throttled_messages", "n/a")


def measure(kind: str, args: argparse.Namespace) -> Run:
    run = Run(kind)
    work = Path(tempfile.mkdtemp(prefix=f"flood-{kind}-"))
    if args.keep:
        print(f"{kind}: process logs in {work}")
    processes: list[Process] = []
    try:
        broker = Broker(kind, work)
        processes.append(broker.process)
        broker.start()
        controller = Controller(broker, work)
        processes.append(controller.process)
        controller.start()
        controller.api.timeout = httpx.Timeout(600)  # a stalled controller is measured, not failed
        devices = [f"pc-{n:02d}" for n in range(1, args.devices + 1)]
        for device_id in devices:
            device = Device(device_id, broker, work)
            processes.append(device.process)
            device.start()
        for device_id in devices:
            controller.wait_device(device_id, "online", 30)
        wire = MqttProbe(broker, "devices/+/status", "devices/+/results")
        flooder = Flooder(broker.port)
        flooder.publish_status("flood-start")
        controller.wait_device(flooder.device_id, "online")
        run.idle = [round_trip(controller, devices[n % len(devices)], n) for n in range(args.rounds)]
        flood_phase(run, controller, devices, flooder, wire, args)
        flooder.close()
        wire.close()
    finally:
        for process in reversed(processes):
            process.kill()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return run


def pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else values[0]


def tables(runs: list[Run], args: argparse.Namespace) -> str:
    rows = []
    for run in runs:
        idle = statistics.median(run.idle)
        for phase, values in (("idle", run.idle), ("flood", run.flood)):
            rows.append(f"| {run.kind} | {phase} | {len(values)} | {statistics.median(values):.1f} | "
                        f"{pct(values, 95):.1f} | {max(values):.1f} | {statistics.median(values) / idle:.2f} |")
    keys = list(runs[0].figures)
    flood_rows = [f"| {run.kind} | {run.sent['births']} + {run.sent['results']} in {run.sent['seconds']} s | "
                  + " | ".join(str(run.figures[k]) for k in keys) + " |" for run in runs]
    return "\n".join([
        f"Other devices' round trip (REST create → result recorded, ms), {args.devices} device daemons, "
        f"sequential echo tasks; flood: one login sending {args.births} births + {args.results} results "
        f"over {args.seconds} s, and {args.burst} tasks created as it starts. SQLite, loopback.", "",
        "| broker | phase | round trips | median ms | p95 ms | max ms | median / idle |",
        "|---|---|---|---|---|---|---|", *rows, "",
        "| broker | flood sent | " + " | ".join(keys) + " |",
        "|---|---|" + "---|" * len(keys), *flood_rows, "",
    ])


def plot(runs: list[Run], name: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot (pip install matplotlib)")
        return
    fig, ax = plt.subplots(figsize=(7, 4))
    series = {f"{run.kind}\n{phase}": values for run in runs for phase, values in (("idle", run.idle), ("flood", run.flood))}
    ax.boxplot(list(series.values()), tick_labels=list(series.keys()), showfliers=False)
    ax.set_ylabel("other devices' round trip (ms)")
    ax.set_title("Round trips idle and during a one-login flood of births and results")
    fig.tight_layout()
    fig.savefig(RESULTS / f"{name}.png", dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--births", type=int, default=4000)
    parser.add_argument("--results", type=int, default=4000)
    parser.add_argument("--seconds", type=float, default=2.0, help="how long the flood is spread over")
    parser.add_argument("--devices", type=int, default=3, help="device daemons besides the flooder")
    parser.add_argument("--rounds", type=int, default=60, help="sequential round trips idle (and at least as many during the flood)")
    parser.add_argument("--burst", type=int, default=96, help="tasks created for the other devices as the flood starts")
    parser.add_argument("--grace", type=float, default=300, help="seconds to wait for things to settle after the flood")
    parser.add_argument("--brokers", nargs="+", default=["mosquitto", "amqtt"])
    parser.add_argument("--keep", action="store_true", help="keep the processes' logs (their directory is printed)")
    parser.add_argument("--out", default="flood", help="name of the result files in benchmarks/results/")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # so `finally` kills the processes it started
    runs = [measure(kind, args) for kind in args.brokers]
    text = tables(runs, args)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.out}.md").write_text(text)
    plot(runs, args.out)


if __name__ == "__main__":
    main()
