"""Sequential task latency, the fleet side by side with raw paho and Celery + Redis.

    .venv/bin/python -m benchmarks.latency                 # defaults: 500 tasks, 3 repeats
    .venv/bin/python -m benchmarks.latency --tasks 200 --repeat 1
    .venv/bin/python -m benchmarks.latency --baseline ../wt-main   # A/B: also the fleet of another checkout

Each repeat starts everything it measures, one system after the other, in a fresh directory:

- fleet: a broker (Mosquitto, then the embedded amqtt broker), `fleet controller` on SQLite and
  one `fleet device` daemon. One `echo` task at a time: POST /api/v1/tasks, then the task's row
  is read straight from SQL (every 0.5 ms) until its status is final. Latency is POST sent →
  final status committed; the POST's own time is reported too.
- paho: the floor on the same broker. A paho client publishes a task (QoS 1) to a paho
  "device" in its own process that answers at once (QoS 1); round trip measured at the sender.
- celery: a private redis-server and one Celery worker (solo pool) consuming the device's
  queue; `echo.apply_async(args, queue=...).get()` with a trivial echo task.

With `--baseline DIR` (a checkout of another commit, e.g. `git worktree add --detach DIR main`)
the fleet is also run with its controller and device imported from DIR, right after this
checkout's, on the same broker: an A/B in the same run.

One device answering tasks back to back sends 3 results per task, 150–300 a second, over the
controller's default per-device budget (FLEET_DEVICE_MESSAGE_RATE, 50/s, bursts of 500): past
the burst a result would be dropped as a flood and recovered only by the re-send 30 s later,
which this benchmark would count as lost. The fleet therefore runs with
`device_message_rate=1000` unless `--set` gives another value.

Ratios (fleet/celery, fleet/paho, fleet/baseline) are computed within each repeat, then summarised across
repeats as median (min–max). Writes benchmarks/results/latency.md and latency.png.
Needs `pip install -e '.[test,bench]'`, mosquitto and redis-server on PATH.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.common import (
    FINAL,
    RESULTS,
    Processes,
    TaskStates,
    interruptible,
    machine_note,
    markdown_table,
    percentile,
    pyplot,
    python_module,
    setting,
    spread,
    start_celery_workers,
    start_redis,
)
from tests.harness import Broker, Controller, Device

DEVICE = "bench-pc"
BASELINE = "baseline"  # the fleet run from --baseline's checkout
FLEET_SETTINGS = {"device_message_rate": "1000"}  # see the module docstring
QUANTILES = (("p50", 50.0), ("p95", 95.0), ("p99", 99.0), ("max", 100.0))


@dataclass
class Sample:
    """One system's latencies (ms) in one repeat, plus tasks that never finished."""

    latencies: list[float] = field(default_factory=list)
    posts: list[float] = field(default_factory=list)
    lost: int = 0
    refused: int = 0  # the create call itself failed

    def q(self, name: str) -> float:
        return percentile(self.latencies, dict(QUANTILES)[name]) if self.latencies else float("nan")


@contextmanager
def code_from(checkout: Path | None) -> Iterator[None]:
    """Processes set up meanwhile import the fleet's packages from `checkout` (None: this one)."""
    if checkout is None:
        yield
        return
    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = str(checkout.resolve()) + (os.pathsep + before if before else "")
    try:
        yield
    finally:
        if before is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = before


def commit_of(checkout: Path) -> str:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=checkout, capture_output=True, text=True,
                          timeout=10).stdout.strip() or str(checkout)


def fleet_latency(broker: Broker, work: Path, processes: Processes, args: argparse.Namespace,
                  checkout: Path | None = None) -> Sample:
    work = work / ("baseline" if checkout else "fleet")
    work.mkdir()
    with code_from(checkout):
        controller = Controller(broker, work, **{**FLEET_SETTINGS, **dict(args.set)})
        device = Device(DEVICE, broker, work)
    processes.add(controller.process)
    processes.add(device.process)
    controller.start()
    device.start()
    controller.wait_device(DEVICE, "online", timeout=30)
    states = TaskStates(controller.database_url)
    sample = Sample()
    try:
        for i in range(args.warmup + args.tasks):
            started = time.perf_counter()
            response = controller.api.post("/api/v1/tasks", json={"device_id": DEVICE, "type": "echo",
                                                                  "params": {"message": str(i)}})
            posted = time.perf_counter()
            if response.status_code != 201:  # counted and shown, not fatal: one 503 must not void the run
                sample.refused += 0 if i < args.warmup else 1
                print(f"  POST refused: {response.status_code} {response.text[:200]}", flush=True)
                continue
            task_id = response.json()["id"]
            deadline = posted + args.timeout
            while (status := states.status(task_id)) not in FINAL and time.perf_counter() < deadline:
                time.sleep(0.0005)
            done = time.perf_counter()
            if i < args.warmup:
                continue
            if status not in FINAL:
                sample.lost += 1
                continue
            sample.latencies.append((done - started) * 1000)
            sample.posts.append((posted - started) * 1000)
    finally:
        states.close()
        device.process.kill()
        controller.process.kill()
    return sample


def paho_latency(broker: Broker, work: Path, processes: Processes, args: argparse.Namespace) -> Sample:
    from benchmarks.paho_echo import PahoSender

    echo = processes.add(python_module("paho-echo", "benchmarks.paho_echo", work, "--port", str(broker.port), DEVICE))
    echo.start()
    sender = PahoSender(broker.port)
    sample = Sample()
    try:
        sender.wait_ready([DEVICE])
        for i in range(args.warmup + args.tasks):
            seconds = sender.round_trip(DEVICE, f"t{i}", args.timeout)
            if i < args.warmup:
                continue
            if seconds is None:
                sample.lost += 1
            else:
                sample.latencies.append(seconds * 1000)
    finally:
        sender.close()
        echo.kill()
    return sample


def celery_latency(work: Path, args: argparse.Namespace) -> Sample:
    from celery.exceptions import TimeoutError as CeleryTimeout

    from benchmarks.celery_echo import TASK_NAME, make_app

    with Processes() as processes:
        url = start_redis(work, processes)
        start_celery_workers(work, processes, url, [DEVICE])
        app = make_app(url)
        echo = app.tasks[TASK_NAME]
        sample = Sample()
        try:
            for i in range(args.warmup + args.tasks):
                started = time.perf_counter()
                try:
                    echo.apply_async(args=[str(i)], queue=DEVICE).get(timeout=args.timeout)
                except CeleryTimeout:
                    sample.lost += 0 if i < args.warmup else 1
                    continue
                if i >= args.warmup:
                    sample.latencies.append((time.perf_counter() - started) * 1000)
        finally:
            app.close()
    return sample


def one_repeat(args: argparse.Namespace) -> dict[tuple[str, str], Sample]:
    samples: dict[tuple[str, str], Sample] = {}
    with tempfile.TemporaryDirectory(prefix="fleet-latency-") as tmp, Processes() as processes:
        for kind in args.brokers:
            work = Path(tmp) / kind
            work.mkdir()
            broker = Broker(kind, work)
            processes.add(broker.process)
            broker.start()
            samples[("fleet", kind)] = fleet_latency(broker, work, processes, args)
            if args.baseline is not None:
                samples[(BASELINE, kind)] = fleet_latency(broker, work, processes, args, args.baseline)
            samples[("paho", kind)] = paho_latency(broker, work, processes, args)
            broker.kill()
            print(f"  {kind}: " + ", ".join(f"{system} p50 {sample.q('p50'):.2f} ms"
                                            for (system, on), sample in samples.items() if on == kind), flush=True)
        if not args.no_celery:
            work = Path(tmp) / "celery"
            work.mkdir()
            samples[("celery", "redis")] = celery_latency(work, args)
            print(f"  celery p50 {samples[('celery', 'redis')].q('p50'):.2f} ms", flush=True)
    return samples


def report(runs: list[dict[tuple[str, str], Sample]], args: argparse.Namespace) -> str:
    systems = list(runs[0])
    rows = []
    for system in systems:
        samples = [run[system] for run in runs]
        cells = [spread([s.q(name) for s in samples], 2) for name, _ in QUANTILES]
        posts = [percentile(s.posts, 50) for s in samples if s.posts]
        lost = sum(s.lost for s in samples)
        refused = sum(s.refused for s in samples)
        rows.append([*system, *cells, spread(posts, 2) if posts else "–", str(lost), str(refused)])
    table = markdown_table(["system", "broker", "p50 ms", "p95 ms", "p99 ms", "max ms", "POST alone p50 ms",
                            "lost (all repeats)", "refused (all repeats)"], rows)
    ratio_rows = []
    for kind in args.brokers:
        for peer in (("celery", "redis"), ("paho", kind), (BASELINE, kind)):
            if peer not in runs[0]:
                continue
            for name in ("p50", "p99"):
                values = [run[("fleet", kind)].q(name) / run[peer].q(name) for run in runs]
                ratio_rows.append([kind, f"fleet / {peer[0]}", name, spread(values, 1) + " ×"])
    ratios = markdown_table(["broker", "ratio", "quantile", "within each repeat"], ratio_rows)
    baseline = (f" baseline = the same fleet measurement with the controller and device of commit "
                f"{commit_of(args.baseline)}, right after this commit's, on the same broker.") if args.baseline else ""
    return (
        f"Sequential latency, {args.tasks} tasks per system and repeat (after {args.warmup} warm-up tasks), "
        f"{len(runs)} repeat(s): median across repeats (min–max). fleet = POST /api/v1/tasks sent → final status "
        "committed in SQL (SQLite, read every 0.5 ms); paho = publish → echo device's answer received "
        "(QoS 1 both ways, same broker); celery = `apply_async(...).get()` on Redis, one solo worker on the "
        f"device's queue.{baseline} {machine_note()}.\n\n{table}\n\nRatios computed within each repeat, "
        f"then median (min–max) across repeats:\n\n{ratios}\n"
    )


def plot(runs: list[dict[tuple[str, str], Sample]], args: argparse.Namespace) -> None:
    plt = pyplot()
    if plt is None:
        return
    systems = list(runs[0])
    labels = [f"{s}\n{b}" for s, b in systems]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    width = 0.38
    for offset, name in ((-width / 2, "p50"), (width / 2, "p99")):
        values = [[run[s].q(name) for run in runs] for s in systems]
        mids = [sorted(v)[len(v) // 2] for v in values]
        errs = [[m - min(v) for m, v in zip(mids, values)], [max(v) - m for m, v in zip(mids, values)]]
        ax.bar([i + offset for i in range(len(systems))], mids, width, yerr=errs, capsize=3, label=name)
    ax.set_xticks(range(len(systems)), labels)
    ax.set_yscale("log")
    ax.set_ylabel("task latency (ms, log scale)")
    ax.set_title(f"Sequential task latency ({args.tasks} tasks, {len(runs)} repeats, error bars: min–max across repeats)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.results / "latency.png", dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=500, help="measured tasks per system and repeat (default 500)")
    parser.add_argument("--warmup", type=int, default=20, help="tasks run first and not counted (default 20)")
    parser.add_argument("--repeat", type=int, default=3, help="repeats of the whole comparison (default 3)")
    parser.add_argument("--brokers", nargs="+", default=["mosquitto", "amqtt"], choices=["mosquitto", "amqtt"])
    parser.add_argument("--timeout", type=float, default=30, help="seconds before a task counts as lost (default 30)")
    parser.add_argument("--no-celery", action="store_true", help="leave out Celery + Redis")
    parser.add_argument("--baseline", type=Path, help="also run the fleet from this checkout (A/B in the same run)")
    parser.add_argument("--results", type=Path, default=RESULTS,
                        help="where latency.md and latency.png go (default benchmarks/results)")
    parser.add_argument("--set", action="append", default=[], type=setting, metavar="KEY=VALUE",
                        help="a controller setting, e.g. --set device_message_rate=1000 (FLEET_<KEY>)")
    args = parser.parse_args()
    runs = []
    for repeat in range(args.repeat):
        print(f"repeat {repeat + 1}/{args.repeat}", flush=True)
        runs.append(one_repeat(args))
    args.results.mkdir(parents=True, exist_ok=True)
    text = report(runs, args)
    (args.results / "latency.md").write_text(text)
    print(text)
    plot(runs, args)


if __name__ == "__main__":
    interruptible(main)
