"""Measure presence and reconnect coverage on each broker with real processes.

- offline after SIGKILL: a device (keepalive 2 s) is killed with -9; time until the
  controller's REST API shows it offline (the broker publishes its last will).
- offline task delay: a task created while the device is down; time from the device's
  restart to the task's result being recorded.

    .venv/bin/python -m benchmarks.presence --rounds 5

Writes benchmarks/results/presence.md.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from tests.harness import Broker, Controller, Device

RESULTS = Path(__file__).parent / "results"
KEEPALIVE = 2


def measure(kind: str, rounds: int) -> tuple[list[float], list[float]]:
    offline, catch_up = [], []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        broker = Broker(kind, work)
        broker.start()
        controller = Controller(broker, work)
        device = Device("bench-pc", broker, work, keepalive=str(KEEPALIVE))
        try:
            controller.start()
            for _ in range(rounds):
                device.start()
                controller.wait_device("bench-pc", "online")
                device.kill()
                killed = time.monotonic()
                controller.wait_device("bench-pc", "offline", timeout=30)
                offline.append(time.monotonic() - killed)
                task = controller.create_task("bench-pc", "echo")
                restarted = time.monotonic()
                device.start()
                controller.wait_task(task["id"], {"succeeded"}, timeout=30)
                catch_up.append(time.monotonic() - restarted)
                device.kill()
                controller.wait_device("bench-pc", "offline", timeout=30)
        finally:
            for process in (device.process, controller.process, broker.process):
                process.kill()
    return offline, catch_up


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--brokers", nargs="+", default=["amqtt", "mosquitto"])
    args = parser.parse_args()
    rows = []
    for kind in args.brokers:
        offline, catch_up = measure(kind, args.rounds)
        rows.append(f"| {kind} | offline after SIGKILL (keepalive {KEEPALIVE} s) | {args.rounds} | {statistics.median(offline):.2f} | {max(offline):.2f} |")
        rows.append(f"| {kind} | device restart → offline-created task recorded | {args.rounds} | {statistics.median(catch_up):.2f} | {max(catch_up):.2f} |")
    table = "\n".join(["| broker | measure | rounds | median s | max s |", "|---|---|---|---|---|", *rows])
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "presence.md").write_text(f"Real processes on loopback, REST polled every 50 ms.\n\n{table}\n")
    print(table)


if __name__ == "__main__":
    main()
