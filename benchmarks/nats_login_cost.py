"""nats-server's CPU per MQTT login, by bcrypt cost: why broker/credentials.py hashes NATS
passwords at cost 4. One nats-server (JetStream, MQTT) with one device login whose password
hash has the given cost; N sequential MQTT CONNECT → CONNACK → DISCONNECT; the server's CPU
time (user + system, psutil) over the N logins, per login.

    .venv/bin/python -m benchmarks.nats_login_cost --logins 200 --costs 4 10 11 --repeat 3

Writes a markdown table to stdout (results/nats_login_cost.md holds the last run)."""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import bcrypt
import psutil

from benchmarks.common import spread
from broker.credentials import Identity, write_atomically
from broker.nats_auth import nats_authorization
from tests.integration.broker_conformance.mqtt_kit import RawClient
from tests.nats_broker import nats_binary, single_node_conf
from tests.ports import free_port, listens


def cpu_ms_per_login(cost: int, logins: int) -> float:
    """Start a server whose one login has a cost-`cost` hash; its CPU ms per login."""
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        secret = "s" * 32  # as long as new_secret()'s
        hashed = bcrypt.hashpw(secret.encode(), bcrypt.gensalt(cost)).decode()
        write_atomically(work / "auth.conf", nats_authorization([Identity("pc-1", "device", "", nats_password_hash=hashed)])[0])
        port = free_port()
        (work / "nats.conf").write_text(single_node_conf(work, free_port(), port, work / "auth.conf", work / "nats.pid"))
        server = subprocess.Popen([nats_binary(), "-c", str(work / "nats.conf")], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 20
            while not listens(server.pid, port):
                if time.monotonic() > deadline:
                    raise SystemExit("nats-server did not start")
                time.sleep(0.05)
            RawClient(port, "warm-up", login=("pc-1", secret)).disconnect()
            process = psutil.Process(server.pid)
            before = process.cpu_times()
            for number in range(logins):
                RawClient(port, f"pc-1-{number}", login=("pc-1", secret)).disconnect()
            after = process.cpu_times()
        finally:
            server.terminate()
            server.wait(10)
    spent = (after.user - before.user) + (after.system - before.system)
    return spent * 1000 / logins


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--logins", type=int, default=200, help="MQTT logins per measurement")
    parser.add_argument("--costs", type=int, nargs="+", default=[4, 10, 11], help="bcrypt costs to compare")
    parser.add_argument("--repeat", type=int, default=3, help="measurements per cost")
    options = parser.parse_args()
    print(f"nats-server CPU per MQTT login ({options.logins} logins, {options.repeat} repeats; median (range))\n")
    print("| bcrypt cost | CPU ms per login | 100,000 logins (a reconnect storm), CPU s |")
    print("|---|---|---|")
    for cost in options.costs:
        figures = [cpu_ms_per_login(cost, options.logins) for _ in range(options.repeat)]
        storm = statistics.median(figures) * 100_000 / 1000
        print(f"| {cost} | {spread(figures, 2)} | {storm:,.0f} |")


if __name__ == "__main__":
    main()
