"""The device daemon's idle memory, and what it is made of.

A real daemon on Mosquitto, born (its retained birth seen by a probe), then left idle: its
maximum RSS and its USS over `--seconds`, and its CPU %. Two ways of starting it, in the same
run, round after round: `fleet device` (the entry point: `cli.entry`, without the rest of the
CLI) and the typer app (`cli.main`, how `fleet device` started before). Beside them, the floor:
fresh interpreters that only import what the daemon cannot do without, step by step, and
report their RSS.

    .venv/bin/python -m benchmarks.device_memory --rounds 3

Writes benchmarks/results/device_memory.md and device_memory.png.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from benchmarks.common import machine_note, markdown_table, pyplot, spread
from tests.harness import Broker, Device, MqttProbe, fleet_argv, wait_for

RESULTS = Path(__file__).parent / "results"
TYPER_CLI = [sys.executable, "-c", "import sys; from cli.main import main; sys.argv[0] = 'fleet'; main()"]
STARTS = {"fleet device": fleet_argv("device"), "typer CLI (before)": [*TYPER_CLI, "device"]}
FLOOR = {
    "interpreter (+ psutil, to measure)": "",
    "+ asyncio, ssl, sqlite3, paho-mqtt": "import asyncio, ssl, sqlite3, paho.mqtt.client",
    "+ pydantic and the wire schemas": "import schemas.tasks, schemas.events, schemas.status",
    "+ pydantic-settings and FleetSettings": "import config; config.load_settings()",
    "+ the daemon's modules (device.daemon)": "import device.daemon",
}


def idle_daemon(argv: list[str], settle: float, seconds: float) -> tuple[float, float, float]:
    """(max RSS MB, USS MB, CPU %) of a daemon started with `argv`, idle after its birth."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        broker = Broker("mosquitto", work)
        broker.start()
        probe = MqttProbe(broker, "devices/+/status")
        device = Device("idle-pc", broker, work)
        device.process.argv = argv
        try:
            device.start()
            wait_for(lambda: any(m.get("state") == "online" for m in probe.json_messages()), 60, what="its birth")
            assert device.process.popen is not None
            process = psutil.Process(device.process.popen.pid)
            time.sleep(settle)  # the idle state being measured: nothing to wait for
            cpu, began, rss = sum(process.cpu_times()[:2]), time.monotonic(), 0
            while time.monotonic() - began < seconds:
                rss = max(rss, process.memory_info().rss)
                time.sleep(0.5)
            used = sum(process.cpu_times()[:2]) - cpu
            return rss / 1e6, process.memory_full_info().uss / 1e6, 100 * used / (time.monotonic() - began)
        finally:
            probe.close()
            device.process.kill()
            broker.kill()


def floor_rss(steps: list[str]) -> float:
    """RSS MB of a fresh interpreter after `steps` (in a scratch directory: no fleet.toml)."""
    code = "; ".join(["import psutil", *[s for s in steps if s], "print(psutil.Process().memory_info().rss)"])
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp,
                              env={"PYTHONPATH": str(Path(__file__).parents[1]), "FLEET_DATA_DIR": tmp})
    if done.returncode != 0:
        raise RuntimeError(done.stderr)
    return int(done.stdout.split()[-1]) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--settle", type=float, default=3.0, help="seconds idle after the birth before sampling")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds sampled")
    args = parser.parse_args()
    daemons: dict[str, list[tuple[float, float, float]]] = {name: [] for name in STARTS}
    floors: dict[str, list[float]] = {name: [] for name in FLOOR}
    for _ in range(args.rounds):
        for name, argv in STARTS.items():
            daemons[name].append(idle_daemon(argv, args.settle, args.seconds))
        for index, name in enumerate(FLOOR):
            floors[name].append(floor_rss(list(FLOOR.values())[: index + 1]))
    rows = [[name, spread([r for r, _, _ in runs]), spread([u for _, u, _ in runs]), spread([c for _, _, c in runs], 2)]
            for name, runs in daemons.items()]
    rows += [[f"floor: {name}", spread(values), "–", "–"] for name, values in floors.items()]
    table = markdown_table(["process", "idle RSS MB", "USS MB", "CPU %"], rows)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "device_memory.md").write_text(
        f"Median (min–max) of {args.rounds} rounds; daemons on Mosquitto, sampled for {args.seconds:g} s after "
        f"{args.settle:g} s idle; {machine_note()}.\n\n{table}\n"
    )
    print(table)
    plt = pyplot()
    if plt is not None:
        labels = [row[0] for row in rows]
        values = [statistics.median([r for r, _, _ in runs]) for runs in daemons.values()]
        values += [statistics.median(v) for v in floors.values()]
        figure, axes = plt.subplots(figsize=(8, 4))
        axes.barh(labels[::-1], values[::-1])
        axes.axvline(40, color="red", linestyle="--", label="issue 13 target: 40 MB")
        axes.set_xlabel("RSS MB")
        axes.legend()
        figure.tight_layout()
        figure.savefig(RESULTS / "device_memory.png")


if __name__ == "__main__":
    main()
