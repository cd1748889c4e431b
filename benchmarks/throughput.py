"""Sustained tasks/s end to end, and how many were lost: the fleet on SQLite and PostgreSQL
side by side with Celery + Redis and raw paho round trips.

    .venv/bin/python -m benchmarks.throughput              # defaults: 5,000 tasks, 1/4 clients, 3 repeats
    .venv/bin/python -m benchmarks.throughput --workers daemons --batch 0 --tasks 500   # real daemons, single POSTs

Each repeat starts everything it measures, one system after the other:

- fleet: Mosquitto (or --broker amqtt), `fleet controller` on a fresh SQLite file, then on a
  fresh PostgreSQL database (127.0.0.1:5432, user postgres, trust auth; dropped afterwards), and
  its workers: with `--workers simulated` (the default) one `fleet simulate` process running
  --sim-devices devices (the real wire contract, a few hundred microseconds of CPU per task, so
  the devices are not what is measured on a small machine); with `--workers daemons`, --devices
  real `fleet device` daemons. For each client count C, C threads (one httpx client each) create
  `echo` tasks, spread round-robin over the devices, as fast as the API takes them: --batch tasks
  per `POST /api/v1/tasks/batch` (0: one `POST /api/v1/tasks` each); then the tasks' rows are
  read from SQL until all are final. Throughput = succeeded tasks / (first POST sent → last
  final status seen). Lost = created but not final once nothing moved for --settle seconds; it
  must be 0. The controller's CPU time (user + system) per task is measured over the same span.
- celery: a private redis-server and one Celery worker process per device queue (solo pool:
  --devices workers, one queue each; a worker process per simulated device would not fit). C threads, each with its own Celery app, `apply_async`
  their share of the tasks round-robin over the queues, then `.get()` every result.
- paho: the same broker, one paho echo "device" process per device id; one sender keeps C
  tasks in flight (a window of C) and counts the answers.

Ratios (fleet/celery, fleet/paho) are computed within each repeat for the same C, then shown
as median (min–max) across repeats. Writes benchmarks/results/throughput.md and throughput.png.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

from benchmarks.common import (
    RESULTS,
    Processes,
    TaskStates,
    interruptible,
    machine_note,
    markdown_table,
    postgres_database,
    pyplot,
    python_module,
    run_threads,
    setting,
    spread,
    start_celery_workers,
    start_redis,
)
from device.simulator import device_ids as simulated_ids
from tests.harness import Broker, Controller, Device, Process, base_env, fleet_argv


@dataclass
class Run:
    """One system at one client count in one repeat."""

    tasks: int
    succeeded: int
    lost: int  # accepted but never final
    refused: int  # the create call itself failed
    seconds: float  # first create → last result
    create_seconds: float
    cpu_ms: float | None = None  # the controller's CPU per created task over the run (fleet only)
    device_cpu_ms: float | None = None  # the fleet's devices' CPU per created task (simulator or daemons)

    @property
    def rate(self) -> float:
        return self.succeeded / self.seconds if self.seconds > 0 else 0.0

    @property
    def create_rate(self) -> float:
        return self.tasks / self.create_seconds if self.create_seconds > 0 else 0.0


SIM_PREFIX = "bench"


def device_ids(args: argparse.Namespace) -> list[str]:
    """The Celery queues and paho echo devices, and the fleet's daemons."""
    return [f"bench-{i:02d}" for i in range(args.devices)]


def fleet_devices(args: argparse.Namespace) -> list[str]:
    return simulated_ids(SIM_PREFIX, args.sim_devices) if args.workers == "simulated" else device_ids(args)


def cpu_seconds(processes: list[psutil.Process]) -> float:
    return sum(sum(process.cpu_times()[:2]) for process in processes)


def fleet_run(controller: Controller, workers: list[psutil.Process], states: TaskStates, clients: int,
              args: argparse.Namespace) -> Run:
    ids, refused, lock = [], 0, threading.Lock()
    devices = fleet_devices(args)
    per_request = max(args.batch, 1)

    def body(n: int) -> dict[str, object]:
        return {"device_id": devices[n % len(devices)], "type": "echo", "params": {"message": str(n)}}

    def create(api: httpx.Client, first: int) -> list[str]:
        numbers = range(first, min(first + per_request, args.tasks))
        if args.batch == 0:
            response = api.post("/api/v1/tasks", json=body(first))
            response.raise_for_status()
            return [response.json()["id"]]
        response = api.post("/api/v1/tasks/batch", json={"tasks": [body(n) for n in numbers]})
        response.raise_for_status()
        return [item["id"] for item in response.json()["items"]]

    def client(requests: Iterator[int]) -> None:
        nonlocal refused
        with httpx.Client(base_url=str(controller.api.base_url), headers=controller.api.headers, timeout=60) as api:
            for request in requests:
                first = request * per_request
                if first >= args.tasks:
                    return
                try:
                    created = create(api, first)
                except httpx.HTTPError:
                    with lock:
                        refused += min(per_request, args.tasks - first)
                    continue
                with lock:
                    ids.extend(created)

    process = [psutil.Process(controller.process.popen.pid if controller.process.popen else None)]
    cpu_before = cpu_seconds(process), cpu_seconds(workers)
    started = time.perf_counter()
    run_threads(clients, client)
    created = time.perf_counter()
    pending, outcomes, last_change = list(ids), Counter[str](), time.perf_counter()
    while pending and time.perf_counter() - last_change < args.settle:
        time.sleep(0.05)
        finished = states.finished(pending)
        if finished:
            outcomes.update(finished.values())
            pending, last_change = [i for i in pending if i not in finished], time.perf_counter()
    succeeded = outcomes["succeeded"]
    per_task = 1000 / max(len(ids), 1)
    cpu_ms = (cpu_seconds(process) - cpu_before[0]) * per_task
    device_cpu_ms = (cpu_seconds(workers) - cpu_before[1]) * per_task
    return Run(args.tasks, succeeded, len(pending), refused, last_change - started, created - started, cpu_ms,
               device_cpu_ms)


def start_workers(broker: Broker, work: Path, processes: Processes, args: argparse.Namespace) -> list[psutil.Process]:
    """The fleet's devices: one `fleet simulate` process, or real device daemons."""
    if args.workers == "daemons":
        started = [processes.add(Device(device_id, broker, work).process) for device_id in device_ids(args)]
    else:
        argv = fleet_argv("simulate", "--devices", str(args.sim_devices), "--prefix", SIM_PREFIX, "--mqtt-url",
                          broker.url, "--every", "60")
        started = [processes.add(Process("simulate", argv, work, base_env()))]
    for process in started:
        process.start()
    return [psutil.Process(process.popen.pid) for process in started if process.popen]


@contextmanager
def database(kind: str) -> Iterator[str | None]:
    with postgres_database() if kind == "postgres" else nullcontext(None) as url:
        yield url


def fleet_throughput(kind: str, work: Path, args: argparse.Namespace) -> dict[int, Run]:
    runs = {}
    with Processes() as processes, database(kind) as url:
        broker = Broker(args.broker, work)
        processes.add(broker.process)
        broker.start()
        controller = Controller(broker, work, database_url=url, **dict(args.set))
        processes.add(controller.process)
        controller.start()
        workers = start_workers(broker, work, processes, args)
        for device_id in fleet_devices(args):
            controller.wait_device(device_id, "online", timeout=120)
        states = TaskStates(controller.database_url)
        try:
            for clients in args.clients:
                runs[clients] = run = fleet_run(controller, workers, states, clients, args)
                print(f"  fleet {kind} C={clients}: {run.rate:.0f} tasks/s, created {run.create_rate:.0f}/s, "
                      f"lost {run.lost}, refused {run.refused}, CPU ms/task: controller {run.cpu_ms:.2f}, "
                      f"devices {run.device_cpu_ms:.2f}", flush=True)
        finally:
            states.close()
            processes.kill_all()  # before the PostgreSQL database is dropped
    return runs


def celery_run(url: str, clients: int, args: argparse.Namespace) -> Run:
    from benchmarks.celery_echo import TASK_NAME, make_app

    devices = device_ids(args)
    lock = threading.Lock()
    totals = {"succeeded": 0, "lost": 0}
    marks: dict[str, float] = {"created": 0.0, "done": 0.0}

    def client(numbers: Iterator[int]) -> None:
        app = make_app(url)
        echo = app.tasks[TASK_NAME]
        try:
            results = []
            for n in numbers:
                if n >= args.tasks:
                    break
                results.append(echo.apply_async(args=[str(n)], queue=devices[n % len(devices)]))
            with lock:
                marks["created"] = max(marks["created"], time.perf_counter())
            succeeded = lost = 0
            for result in results:
                try:  # after one loss, the rest are not each given the full --settle
                    result.get(timeout=args.settle if lost == 0 else 1.0)
                    succeeded += 1
                except Exception:  # noqa: BLE001 - a timeout or a failed task: not a success
                    lost += 1
            with lock:
                totals["succeeded"] += succeeded
                totals["lost"] += lost
                marks["done"] = max(marks["done"], time.perf_counter())
        finally:
            app.close()

    started = time.perf_counter()
    run_threads(clients, client)
    return Run(args.tasks, totals["succeeded"], totals["lost"], 0, marks["done"] - started, marks["created"] - started)


def celery_throughput(work: Path, args: argparse.Namespace) -> dict[int, Run]:
    runs = {}
    with Processes() as processes:
        url = start_redis(work, processes)
        start_celery_workers(work, processes, url, device_ids(args))
        for clients in args.clients:
            runs[clients] = run = celery_run(url, clients, args)
            print(f"  celery C={clients}: {run.rate:.0f} tasks/s, lost {run.lost}", flush=True)
    return runs


def paho_throughput(work: Path, args: argparse.Namespace) -> dict[int, Run]:
    from benchmarks.paho_echo import PahoSender

    runs = {}
    devices = device_ids(args)
    with Processes() as processes:
        broker = Broker(args.broker, work)
        processes.add(broker.process)
        broker.start()
        for device_id in devices:
            processes.add(python_module(f"paho-echo-{device_id}", "benchmarks.paho_echo", work,
                                        "--port", str(broker.port), device_id)).start()
        for clients in args.clients:
            sender = PahoSender(broker.port, window=clients * max(args.batch, 1))
            try:
                sender.wait_ready(devices)
                started = time.perf_counter()
                for n in range(args.tasks):
                    sender.send(devices[n % len(devices)], f"t{n}")
                created = time.perf_counter()
                deadline = time.monotonic() + args.settle
                while sender.in_flight() and time.monotonic() < deadline:
                    time.sleep(0.005)
                answered = len(sender.round_trips)
                last = sender.last_answer
            finally:
                sender.close()
            runs[clients] = run = Run(args.tasks, answered, args.tasks - answered, 0, last - started, created - started)
            print(f"  paho C={clients}: {run.rate:.0f} round trips/s, lost {run.lost}", flush=True)
    return runs


def one_repeat(args: argparse.Namespace) -> dict[tuple[str, str], dict[int, Run]]:
    results: dict[tuple[str, str], dict[int, Run]] = {}
    with tempfile.TemporaryDirectory(prefix="fleet-throughput-") as tmp:
        for kind in args.databases:
            work = Path(tmp) / f"fleet-{kind}"
            work.mkdir()
            results[("fleet", kind)] = fleet_throughput(kind, work, args)
        if not args.no_celery:
            (Path(tmp) / "celery").mkdir()
            results[("celery", "redis")] = celery_throughput(Path(tmp) / "celery", args)
        (Path(tmp) / "paho").mkdir()
        results[("paho", args.broker)] = paho_throughput(Path(tmp) / "paho", args)
    return results


Repeats = list[dict[tuple[str, str], dict[int, Run]]]


def report(repeats: Repeats, args: argparse.Namespace) -> str:
    rows = []
    for system in repeats[0]:
        for clients in args.clients:
            runs = [r[system][clients] for r in repeats]
            ratios = []
            for peer in (("celery", "redis"), ("paho", args.broker)):
                if system[0] != "fleet" or peer not in repeats[0]:
                    ratios.append("–")
                    continue
                ratios.append(spread([r[system][clients].rate / r[peer][clients].rate for r in repeats], 2) + " ×")
            create = spread([r.create_rate for r in runs], 0) if system[0] != "paho" else "–"
            cpu = [spread([getattr(r, name) for r in runs], 2) if system[0] == "fleet" else "–"
                   for name in ("cpu_ms", "device_cpu_ms")]
            rows.append([*system, str(clients), spread([r.rate for r in runs], 0), create,
                         str(max(r.lost for r in runs)), str(max(r.refused for r in runs)), *cpu, *ratios])
    table = markdown_table(["system", "store", "clients", "tasks/s end to end", "created/s", "lost (max)",
                            "refused (max)", "controller CPU ms/task", "devices CPU ms/task", "× celery", "× paho"], rows)
    creates = (f"POST `/api/v1/tasks/batch` with {args.batch} tasks each" if args.batch
               else "POST `/api/v1/tasks` one task each")
    workers = (f"{args.sim_devices} devices of one `fleet simulate` process" if args.workers == "simulated"
               else f"{args.devices} `fleet device` daemons")
    window = f"{max(args.batch, 1)} × `clients`"
    return (
        f"{args.tasks} `echo` tasks per run, {len(repeats)} repeat(s): median across repeats (min–max). fleet = "
        f"concurrent REST clients (httpx, one per thread) {creates} as fast as the API takes them, broker "
        f"{args.broker}, {workers}; end to end = first POST → last final status read from SQL; controller CPU = "
        "its user + system time over that span per task (devices CPU: the same for the simulator or the daemons). celery = one solo worker per queue, "
        f"{args.devices} queues on a private Redis, each client thread its own app, `apply_async` then `.get()`. "
        f"paho = raw round trips through the same broker to {args.devices} echo processes, {window} tasks kept in "
        f"flight. lost = never final after {args.settle:.0f} s without progress. Ratios are computed within each "
        f"repeat. {machine_note()}.\n\n{table}\n"
    )


def plot(repeats: Repeats, args: argparse.Namespace) -> None:
    plt = pyplot()
    if plt is None:
        return
    systems = list(repeats[0])
    fig, ax = plt.subplots(figsize=(8, 4.5))
    width = 0.8 / len(systems)
    for index, system in enumerate(systems):
        values = [[r[system][c].rate for r in repeats] for c in args.clients]
        mids = [statistics.median(v) for v in values]
        errs = [[m - min(v) for m, v in zip(mids, values)], [max(v) - m for m, v in zip(mids, values)]]
        xs = [i - 0.4 + width * (index + 0.5) for i in range(len(args.clients))]
        ax.bar(xs, mids, width, yerr=errs, capsize=3, label=" ".join(system))
    ax.set_xticks(range(len(args.clients)), [f"{c} client(s)" for c in args.clients])
    ax.set_yscale("log")
    ax.set_ylabel("tasks/s end to end (log scale)")
    workers = f"{args.sim_devices} simulated devices" if args.workers == "simulated" else f"{args.devices} daemons"
    per_post = f"batches of {args.batch}" if args.batch else "one task per POST"
    ax.set_title(f"Sustained throughput, {args.tasks} tasks, fleet: {workers}, {per_post} (error bars: min–max)",
                 fontsize="medium")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(args.results / "throughput.png", dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=5000, help="tasks per run (default 5000)")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4], help="client counts (default 1 4)")
    parser.add_argument("--batch", type=int, default=250,
                        help="tasks per POST /api/v1/tasks/batch (default 250; 0: one POST /api/v1/tasks per task)")
    parser.add_argument("--workers", default="simulated", choices=["simulated", "daemons"],
                        help="the fleet's devices: one `fleet simulate` process (default) or real device daemons")
    parser.add_argument("--sim-devices", type=int, default=100, help="simulated devices (default 100)")
    parser.add_argument("--devices", type=int, default=10,
                        help="device daemons (--workers daemons), Celery queues and paho echo devices (default 10)")
    parser.add_argument("--repeat", type=int, default=3, help="repeats of the whole comparison (default 3)")
    parser.add_argument("--databases", nargs="+", default=["sqlite", "postgres"], choices=["sqlite", "postgres"])
    parser.add_argument("--broker", default="mosquitto", choices=["mosquitto", "amqtt"])
    parser.add_argument("--settle", type=float, default=30,
                        help="seconds without progress before unfinished tasks count as lost (default 30)")
    parser.add_argument("--no-celery", action="store_true", help="leave out Celery + Redis")
    parser.add_argument("--results", type=Path, default=RESULTS,
                        help="where throughput.md and throughput.png go (default benchmarks/results)")
    parser.add_argument("--set", action="append", default=[], type=setting, metavar="KEY=VALUE",
                        help="a controller setting, e.g. --set device_message_rate=1000 (FLEET_<KEY>)")
    args = parser.parse_args()
    repeats: Repeats = []
    for repeat in range(args.repeat):
        print(f"repeat {repeat + 1}/{args.repeat}", flush=True)
        repeats.append(one_repeat(args))
    args.results.mkdir(parents=True, exist_ok=True)
    text = report(repeats, args)
    (args.results / "throughput.md").write_text(text)
    print(text)
    plot(repeats, args)


if __name__ == "__main__":
    interruptible(main)
