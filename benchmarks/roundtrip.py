"""Measure task round trips through the whole fleet on each broker.

For each broker kind it starts real processes (broker, controller with SQLite, one device),
sends N `echo` tasks through REST one after another, and reports:

- `e2e`: from the client starting its POST to the final result being recorded in SQL (the
  task's `finished_at`; client and controller share this machine's clock);
- `post`: how long the POST took to answer;
- `recorded`: the task's creation to its final result in SQL (`finished_at - created_at`, both
  set by the controller);
- `observed`: until a REST client polling every 50 ms sees it succeeded.

    .venv/bin/python -m benchmarks.roundtrip --tasks 200

Writes benchmarks/results/roundtrip.md (a table) and, when matplotlib is installed,
benchmarks/results/roundtrip.png.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from tests.harness import Broker, Controller, Device

RESULTS = Path(__file__).parent / "results"


def measure(kind: str, tasks: int) -> dict[str, list[float]]:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        broker = Broker(kind, work)
        broker.start()
        controller = Controller(broker, work)
        device = Device("bench-pc", broker, work)
        try:
            controller.start()
            device.start()
            controller.wait_device("bench-pc", "online")
            e2e, post, recorded, observed = [], [], [], []
            for i in range(tasks):
                wall = datetime.now(timezone.utc)
                started = time.perf_counter()
                task = controller.create_task("bench-pc", "echo", params={"message": str(i)})
                post.append((time.perf_counter() - started) * 1000)
                done = controller.wait_task(task["id"], {"succeeded"}, timeout=30)
                observed.append((time.perf_counter() - started) * 1000)
                created = datetime.fromisoformat(done["created_at"])
                finished = datetime.fromisoformat(done["finished_at"])
                recorded.append((finished - created).total_seconds() * 1000)
                e2e.append((finished - wall).total_seconds() * 1000)
            return {"e2e": e2e, "post": post, "recorded": recorded, "observed": observed}
        finally:
            for process in (device.process, controller.process, broker.process):
                process.kill()


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) > 1 else values[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=200, help="tasks per broker")
    parser.add_argument("--brokers", nargs="+", default=["amqtt", "mosquitto"])
    parser.add_argument("--no-write", action="store_true", help="print the table only (keep benchmarks/results)")
    args = parser.parse_args()

    rows, series = [], {}
    for kind in args.brokers:
        result = measure(kind, args.tasks)
        series[kind] = result["recorded"]
        for name, values in result.items():
            rows.append(
                f"| {kind} | {name} | {len(values)} | {statistics.median(values):.1f} | {pct(values, 95):.1f} "
                f"| {pct(values, 99):.1f} | {max(values):.1f} |"
            )
    table = "\n".join(
        ["| broker | measure | tasks | median ms | p95 ms | p99 ms | max ms |", "|---|---|---|---|---|---|---|", *rows]
    )
    print(table)
    if args.no_write:
        return
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "roundtrip.md").write_text(
        "REST create → result recorded in SQL (`e2e`: client's POST start → finished_at; `post`: the POST alone; "
        "`recorded`: controller's created_at → finished_at) and as seen by a REST client polling every 50 ms "
        f"(`observed`), {args.tasks} sequential echo tasks, SQLite, loopback.\n\n{table}\n"
    )
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot (pip install matplotlib)")
        return
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.boxplot(list(series.values()), tick_labels=list(series.keys()), showfliers=False)
    ax.set_ylabel("create → result recorded (ms)")
    ax.set_title(f"Task round trip through the fleet ({args.tasks} echo tasks)")
    fig.tight_layout()
    fig.savefig(RESULTS / "roundtrip.png", dpi=100)


if __name__ == "__main__":
    main()
