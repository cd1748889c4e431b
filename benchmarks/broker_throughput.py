"""Messages per second through a broker while many subscription filters are present.

For each broker, in one run and on loopback, each a separate process:

- `embedded`: the fleet's broker (`fleet broker`: amqtt 0.12.1 with `broker.fleet_broker`'s
  overrides and topic-tree routing);
- `stock-amqtt`: a plain `amqtt.broker.Broker` with no overrides (this script, `--serve-stock`);
- `mosquitto`: Mosquitto with the fleet's configuration (`broker.mosquitto`).

the script subscribes 10, 1,000 and 10,000 distinct filters shaped like a fleet's (per-device
task topics, group task topics, per-device `config/#` wildcards), held by ten connections; none
matches the measured topic. Then one publisher sends QoS 0 messages on `bench/flow` to one
subscriber, keeping at most `--window` messages in flight, for `--seconds` seconds after a short
warm-up; the rate is the number the subscriber received divided by the time. A second scenario,
"1,000 devices", connects 1,000 clients each subscribed to its task topic, the broadcast topic
and its group's topic (3,000 subscriptions), and measures how many task messages per second
reach their devices, and how long one broadcast takes to reach all 1,000.

The clients are raw sockets (pre-encoded packets, counted by size), so a Python client is not
the bottleneck the way a paho client would be (about 20k msg/s, docs/architecture.md#measured-facts-the-code-relies-on).

    .venv/bin/python -m benchmarks.broker_throughput [--seconds 3] [--window 200]

Writes benchmarks/results/broker_throughput.md and, with matplotlib (`pip install -e
'.[bench]'`), benchmarks/results/broker_throughput.png.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import selectors
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

from benchmarks.broker_processes import running_broker, serve_stock
from benchmarks.raw_mqtt import connect, fleet_filters, publish_packet, subscribe

RESULTS = Path(__file__).parent / "results"
FILTER_COUNTS = (10, 1_000, 10_000)
BROKERS = ("embedded", "stock-amqtt", "mosquitto")
TOPIC = "bench/flow"
HOLDERS = 10
DEVICES = 1_000


# --- scenario 1: throughput with N filters present ---------------------------------------------------
def flow_rate(port: int, seconds: float, window: int) -> float:
    """QoS 0 messages per second from one publisher to one subscriber, at most `window` in flight."""
    subscriber, publisher = connect(port, "bench-sub"), connect(port, "bench-pub")
    try:
        subscribe(subscriber, [TOPIC])
        message = publish_packet(TOPIC, b"x" * 64)
        batch_size = 20
        batch = message * batch_size
        selector = selectors.DefaultSelector()
        subscriber.setblocking(False)
        selector.register(subscriber, selectors.EVENT_READ)
        sent = received_bytes = 0
        warmup_end = time.perf_counter() + min(0.5, seconds / 4)
        end = warmup_end + seconds
        counted_from: int | None = None
        while True:
            now = time.perf_counter()
            if counted_from is None and now >= warmup_end:
                counted_from, started = received_bytes // len(message), now
            if now >= end:
                break
            while sent - received_bytes // len(message) < window:
                publisher.sendall(batch)
                sent += batch_size
            for _key, _events in selector.select(timeout=0.05):
                chunk = subscriber.recv(1 << 20)
                if not chunk:
                    raise ConnectionError("subscriber closed by the broker")
                received_bytes += len(chunk)
        received = received_bytes // len(message) - (counted_from or 0)
        rate = received / (time.perf_counter() - started)
        # drain what is still in flight so the next measurement starts empty
        deadline = time.monotonic() + 120
        while received_bytes // len(message) < sent and time.monotonic() < deadline:
            for _key, _events in selector.select(timeout=0.5):
                received_bytes += len(subscriber.recv(1 << 20))
        selector.close()
        return rate
    finally:
        subscriber.close()
        publisher.close()


def filter_scenario(kind: str, port: int, seconds: float, window: int) -> dict[int, float]:
    holders = [connect(port, f"holder-{i}") for i in range(HOLDERS)]
    rates: dict[int, float] = {}
    present = 0
    try:
        for count in FILTER_COUNTS:
            filters = fleet_filters(present, count - 1)  # plus the measured subscription itself
            for index, holder in enumerate(holders):
                subscribe(holder, filters[index::HOLDERS])
            present = count - 1
            rates[count] = flow_rate(port, seconds, window)
            print(f"  {kind:12} {count:>6} filters  {rates[count]:>10,.0f} msg/s", flush=True)
    finally:
        for holder in holders:
            holder.close()
    return rates


# --- scenario 2: a fleet of 1,000 devices ------------------------------------------------------------
@dataclass
class FleetResult:
    task_rate: float
    broadcast_ms: float


def fleet_scenario(kind: str, port: int, seconds: float, window: int) -> FleetResult:
    """1,000 device connections with task, broadcast and group subscriptions (QoS 0)."""
    devices: list[socket.socket] = []
    try:
        for i in range(DEVICES):
            sock = connect(port, f"dev-{i}")
            subscribe(sock, [f"devices/dev-{i}/tasks", "fleet/broadcast/tasks", f"fleet/groups/grp-{i % 10}/tasks"])
            devices.append(sock)
        publisher = connect(port, "bench-controller")
        selector = selectors.DefaultSelector()
        for index, sock in enumerate(devices):
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ, index)
        tasks = [publish_packet(f"devices/dev-{i}/tasks", b"t" * 64) for i in range(DEVICES)]
        size = {i: len(tasks[i]) for i in range(DEVICES)}
        got = [0] * DEVICES  # bytes per device

        def received() -> int:
            return sum(got[i] // size[i] for i in range(DEVICES))

        order = list(range(DEVICES))
        random.Random(6).shuffle(order)
        sent, position = 0, 0
        started = time.perf_counter()
        end = started + seconds
        while time.perf_counter() < end:
            in_flight = sent - received()
            burst = []
            while in_flight + len(burst) < window:
                burst.append(tasks[order[position % DEVICES]])
                position += 1
            if burst:
                publisher.sendall(b"".join(burst))
                sent += len(burst)
            for key, _events in selector.select(timeout=0.05):
                got[key.data] += len(key.fileobj.recv(1 << 16))  # type: ignore[union-attr]
        task_rate = received() / (time.perf_counter() - started)
        deadline = time.monotonic() + 120
        while received() < sent and time.monotonic() < deadline:
            for key, _events in selector.select(timeout=0.5):
                got[key.data] += len(key.fileobj.recv(1 << 16))  # type: ignore[union-attr]

        broadcast = publish_packet("fleet/broadcast/tasks", b"b" * 64)
        reached = [0] * DEVICES
        started = time.perf_counter()
        publisher.sendall(broadcast)
        deadline = started + 120
        while sum(1 for r in reached if r >= len(broadcast)) < DEVICES and time.perf_counter() < deadline:
            for key, _events in selector.select(timeout=0.5):
                reached[key.data] += len(key.fileobj.recv(1 << 16))  # type: ignore[union-attr]
        broadcast_ms = (time.perf_counter() - started) * 1000
        if sum(1 for r in reached if r >= len(broadcast)) < DEVICES:
            broadcast_ms = float("nan")
        selector.close()
        publisher.close()
        print(f"  {kind:12} 1,000 devices  {task_rate:>10,.0f} task msg/s  broadcast to all in {broadcast_ms:,.0f} ms", flush=True)
        return FleetResult(task_rate, broadcast_ms)
    finally:
        for sock in devices:
            sock.close()


# --- report --------------------------------------------------------------------------------------------
def mosquitto_version() -> str:
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    try:
        out = subprocess.run([binary, "-h"], capture_output=True, text=True, timeout=5).stdout
    except OSError:
        return "?"
    first = out.splitlines()[0] if out else ""
    return first.split("version")[-1].strip() if "version" in first else "?"


def write_results(rates: dict[str, dict[int, float]], fleet: dict[str, FleetResult], seconds: float, window: int) -> None:
    RESULTS.mkdir(exist_ok=True)
    lines = [
        "# Broker throughput with many subscription filters",
        "",
        f"`.venv/bin/python -m benchmarks.broker_throughput --seconds {seconds:g} --window {window}` on "
        f"{os.cpu_count()} cores, loopback, Python {platform.python_version()}, amqtt {version('amqtt')}, "
        f"Mosquitto {mosquitto_version()}; {time.strftime('%Y-%m-%d')}. Each broker is its own process; one",
        "publisher → one subscriber, QoS 0, 64-byte payloads, at most "
        f"{window} messages in flight, {seconds:g} s per cell after a warm-up; the filters are held by {HOLDERS} other",
        "connections and none matches the measured topic.",
        "",
        "| filters present | " + " | ".join(f"{kind} msg/s" for kind in rates) + " | embedded ÷ stock amqtt |",
        "|---|" + "---|" * (len(rates) + 1),
    ]
    for count in FILTER_COUNTS:
        cells = [f"{rates[kind][count]:,.0f}" for kind in rates]
        ratio = rates["embedded"][count] / rates["stock-amqtt"][count] if "stock-amqtt" in rates else float("nan")
        lines.append(f"| {count:,} | " + " | ".join(cells) + f" | {ratio:,.1f}× |")
    if fleet:
        lines += [
            "",
            f"{DEVICES:,} device connections, each subscribed to `devices/<id>/tasks`, `fleet/broadcast/tasks` and",
            "`fleet/groups/<group>/tasks` (3,000 subscriptions, QoS 0): task messages to random devices per second",
            f"(at most {window} in flight, {seconds:g} s), and the time one broadcast takes to reach all of them.",
            "",
            "| broker | task messages/s to 1,000 devices | one broadcast reaches all 1,000 (ms) |",
            "|---|---|---|",
        ]
        for kind, result in fleet.items():
            lines.append(f"| {kind} | {result.task_rate:,.0f} | {result.broadcast_ms:,.0f} |")
    (RESULTS / "broker_throughput.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install -e '.[bench]'): no plot")
        return
    figure, axis = plt.subplots(figsize=(7, 4.2))
    width = 0.8 / len(rates)
    for index, (kind, by_count) in enumerate(rates.items()):
        xs = [position + index * width for position in range(len(FILTER_COUNTS))]
        bars = axis.bar(xs, [by_count[c] for c in FILTER_COUNTS], width, label=kind)
        axis.bar_label(bars, labels=[f"{by_count[c]:,.0f}" for c in FILTER_COUNTS], fontsize=7, rotation=90, padding=2)
    axis.set_xticks([position + width * (len(rates) - 1) / 2 for position in range(len(FILTER_COUNTS))])
    axis.set_xticklabels([f"{c:,} filters" for c in FILTER_COUNTS])
    axis.set_yscale("log")
    axis.set_ylim(top=max(max(v.values()) for v in rates.values()) * 40)
    axis.set_ylabel("messages/s (log scale)")
    axis.set_title("Throughput with N subscription filters present (QoS 0, loopback)")
    axis.legend(loc="upper center", ncol=len(rates), fontsize=8)
    figure.tight_layout()
    figure.savefig(RESULTS / "broker_throughput.png", dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0, help="measured seconds per cell (default 3)")
    parser.add_argument("--window", type=int, default=200, help="messages in flight at most (default 200)")
    parser.add_argument("--brokers", default=",".join(BROKERS), help=f"comma-separated subset of {','.join(BROKERS)}")
    parser.add_argument("--no-fleet", action="store_true", help="skip the 1,000-device scenario")
    parser.add_argument("--serve-stock", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_stock:
        serve_stock(args.serve_stock)
        return
    rates: dict[str, dict[int, float]] = {}
    fleet: dict[str, FleetResult] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.brokers.split(","):
            print(f"{kind}:", flush=True)
            with running_broker(kind, Path(tmp)) as port:
                rates[kind] = filter_scenario(kind, port, args.seconds, args.window)
            if not args.no_fleet:
                with running_broker(kind, Path(tmp)) as port:
                    fleet[kind] = fleet_scenario(kind, port, args.seconds, args.window)
    write_results(rates, fleet, args.seconds, args.window)


if __name__ == "__main__":
    main()
