"""Ports for the processes tests and benchmarks start: free ones outside the kernel's
ephemeral range, and whether a given process (not some other program) listens on one.
Under pytest-xdist (`tests/run.sh` runs two workers) each worker draws from ports of its own
(port % workers == its index), so two workers never hand out the same port at once."""

from __future__ import annotations

import os
import random
import socket
import sys
from pathlib import Path

import psutil

# Linux's default when /proc does not say; Windows' and macOS' dynamic range is 49152-65535.
DEFAULT_EPHEMERAL_PORTS = (32768, 60999)
LOWEST_TEST_PORT = 10000  # below it sit the well-known services (PostgreSQL, Redis, NATS, ...)
PORT_ATTEMPTS = 5


def ephemeral_ports() -> tuple[int, int]:
    """The range the kernel picks outgoing connections' local ports from."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return DEFAULT_EPHEMERAL_PORTS if sys.platform.startswith("linux") else (49152, 65535)


def worker_share() -> tuple[int, int]:
    """(index, count) of this pytest-xdist worker, from the variables xdist sets in it (and its
    child processes inherit): gw1 of 2 workers is (1, 2); (0, 1) outside xdist."""
    name = os.environ.get("PYTEST_XDIST_WORKER", "")
    try:
        count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    except ValueError:
        count = 1
    if count > 1 and name.startswith("gw") and name[2:].isdigit():
        return int(name[2:]) % count, count
    return 0, 1


def free_port() -> int:
    """A port nothing is bound to now, outside the ephemeral range: a port the kernel handed
    out by `bind(0)` comes from that range, so any outgoing connection started before the
    process that should listen there binds it (an HTTP request, an MQTT client) may take it.
    Another program can still take it meanwhile: `start_listening` moves to a new one then.
    An xdist worker picks only ports of its share (`worker_share`)."""
    low, high = ephemeral_ports()
    index, count = worker_share()
    candidates = [r for r in (range(LOWEST_TEST_PORT, low), range(high + 1, 65536)) if len(r) > count]
    for _ in range(50 if candidates else 0):
        chosen = random.choice(candidates)
        port = random.choice(chosen)
        port += (index - port) % count  # the next port of this worker's share
        if port not in chosen:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as sock:  # no room outside the ephemeral range: the kernel's choice
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def listens(pid: int, port: int) -> bool:
    """Whether process `pid` itself (not some other program) listens on TCP `port`."""
    try:
        return any(
            c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port
            for c in psutil.Process(pid).net_connections("tcp")
        )
    except psutil.Error:
        return False


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0
