"""Measure REST creates/s and end-to-end tasks/s on real processes.

Starts a broker, a controller (SQLite unless --database-url) and `--devices` device daemons,
then, for each concurrency in `--concurrency`, C client threads (one httpx connection each)
POST `--tasks` echo tasks spread over the devices as fast as they can. Reported per run:

- `create/s`: tasks created per second while the clients were posting, and the POST latency
  (p50/p99 ms) the clients saw;
- `e2e/s`: tasks per second from the first POST until the last result was recorded in SQL
  (the newest `finished_at`), and how many were not final after `--timeout` s (`lost`);
- CPU time the controller and the device daemons spent per task (user + system).

    .venv/bin/python -m benchmarks.create_rate --tasks 2000 --devices 10 --concurrency 1 4 32

`--profile FILE` records the controller with py-spy (if installed) during the first run.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psutil

from tests.harness import Broker, Controller, Device, wait_for


def _post_all(controller: Controller, device_ids: list[str], first: int, count: int, step: int,
              latencies: list[float], ids: list[str]) -> None:
    headers = {"Authorization": f"Bearer {controller.admin_token}"}
    with httpx.Client(base_url=f"http://127.0.0.1:{controller.port}", headers=headers, timeout=30) as client:
        for n in range(first, count, step):
            body = {"device_id": device_ids[n % len(device_ids)], "type": "echo", "params": {"message": str(n)}}
            started = time.perf_counter()
            response = client.post("/api/v1/tasks", json=body)
            latencies.append((time.perf_counter() - started) * 1000)
            if response.status_code != 201:
                raise RuntimeError(f"POST /api/v1/tasks answered {response.status_code}: {response.text}")
            ids.append(response.json()["id"])


def _final_count(controller: Controller) -> int:
    page = controller.api.get("/api/v1/tasks", params={"status": "succeeded", "limit": 1}).json()
    return int(page["total"])


def _newest_finish(controller: Controller) -> datetime:
    # Newest first by creation; the last created is not always the last finished, so look at a page.
    page = controller.api.get("/api/v1/tasks", params={"status": "succeeded", "limit": 500}).json()
    return max(datetime.fromisoformat(item["finished_at"]) for item in page["items"])


def _cpu(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        times = psutil.Process(pid).cpu_times()
        total += times.user + times.system
    return total


def run_once(controller: Controller, device_ids: list[str], tasks: int, concurrency: int, timeout: float,
             done_before: int, device_pids: list[int]) -> dict[str, Any]:
    latencies: list[float] = []
    ids: list[str] = []
    threads = [threading.Thread(target=_post_all, args=(controller, device_ids, i, tasks, concurrency, latencies, ids))
               for i in range(concurrency)]
    controller_pid = controller.process.popen.pid if controller.process.popen else 0
    cpu_before = _cpu([controller_pid]), _cpu(device_pids)
    wall_start = datetime.now().astimezone()
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    posted = time.perf_counter() - started
    lost = 0
    try:
        wait_for(lambda: _final_count(controller) >= done_before + len(ids), timeout, 0.05, "all tasks final")
    except AssertionError:
        lost = done_before + len(ids) - _final_count(controller)
    e2e = (_newest_finish(controller) - wall_start).total_seconds()
    cpu_after = _cpu([controller_pid]), _cpu(device_pids)
    q = statistics.quantiles(latencies, n=100)
    return {"concurrency": concurrency, "tasks": len(ids), "create_per_s": len(ids) / posted,
            "post_p50_ms": statistics.median(latencies), "post_p99_ms": q[98], "e2e_per_s": len(ids) / e2e, "lost": lost,
            "controller_cpu_ms": (cpu_after[0] - cpu_before[0]) * 1000 / len(ids),
            "device_cpu_ms": (cpu_after[1] - cpu_before[1]) * 1000 / len(ids)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--devices", type=int, default=10)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 32])
    parser.add_argument("--broker", default="mosquitto", choices=["mosquitto", "amqtt"])
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--timeout", type=float, default=120)
    parser.add_argument("--profile", type=Path, default=None, help="py-spy flame graph (svg) of the controller")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        broker = Broker(args.broker, work)
        broker.start()
        controller = Controller(broker, work, database_url=args.database_url)
        device_ids = [f"rate-{n:02d}" for n in range(args.devices)]
        devices = [Device(device_id, broker, work) for device_id in device_ids]
        spy: subprocess.Popen[bytes] | None = None
        try:
            controller.start()
            for device in devices:
                device.start()
            for device_id in device_ids:
                controller.wait_device(device_id, "online", timeout=60)
            rows = []
            print("| broker | devices | clients | tasks | creates/s | POST p50 ms | POST p99 ms | e2e tasks/s | lost "
                  "| controller CPU ms/task | devices CPU ms/task |\n|---|---|---|---|---|---|---|---|---|---|---|")
            for concurrency in args.concurrency:
                if args.profile is not None and spy is None and shutil.which("py-spy"):
                    spy = subprocess.Popen(["py-spy", "record", "--pid", str(controller.process.popen.pid if controller.process.popen else 0), "--threads",
                                            "-o", str(args.profile), "--format", "raw", "--rate", "250", "--nonblocking"])
                    time.sleep(1)
                row = run_once(controller, device_ids, args.tasks, concurrency, args.timeout, _final_count(controller),
                               [d.process.popen.pid for d in devices if d.process.popen])
                if spy is not None and spy.poll() is None:
                    spy.send_signal(2)
                    spy.wait(30)
                rows.append(row)
                print(f"| {args.broker} | {args.devices} | {row['concurrency']} | {row['tasks']} | {row['create_per_s']:.0f} "
                      f"| {row['post_p50_ms']:.1f} | {row['post_p99_ms']:.1f} | {row['e2e_per_s']:.0f} | {row['lost']} "
                      f"| {row['controller_cpu_ms']:.2f} | {row['device_cpu_ms']:.2f} |",
                      flush=True)
        finally:
            for process in [*(d.process for d in devices), controller.process, broker.process]:
                process.kill()


if __name__ == "__main__":
    main()
