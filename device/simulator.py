"""`fleet simulate`: many simulated devices in one process, for load tests and benchmarks.

Each device is one MQTT connection (aiomqtt, on the caller's event loop) speaking the same wire
contract as the daemon: session ids, retained birth and will, heartbeats, task events with seq
numbers, and journal semantics for a repeated task id (`device/sim_device.py`). What it does
not do: run real handlers (it knows `echo`, `ping` and `sleep`, each taking `task_seconds`, or
`sleep`'s own `seconds`), verify signed tasks, or keep its journal across restarts.

    fleet = SimulatedFleet("mqtt://127.0.0.1:1883", 1000)
    await fleet.start()            # connects in waves of `wave_size`
    await fleet.wait_online(30)
    ...
    await fleet.stop()             # retained `offline`/shutdown, then disconnect

Connections are opened in waves: a wave of `wave_size` devices must be born (or
`wave_timeout` pass) before the next starts, so 10,000 connections never pile up in the
broker's accept queue at once. The process needs an open-file limit above `count` (the CLI
raises it where the OS allows).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import platform
import random
import re
import socket
import ssl
import sys
from collections.abc import Iterable, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from broker.connection import BrokerAddress, broker_addresses
from config.settings import FleetSettings
from device.sim_device import SimConfig, SimCounters, SimulatedDevice
from device.sim_intake import SIMULATED_TYPES
from schemas.common import DEVICE_ID_PATTERN, GROUP_PATTERN
from schemas.errors import DeviceError
from schemas.status import DeviceFacts

log = logging.getLogger(__name__)

MAX_DEVICES = 100_000
DEFAULT_WAVE = 250
DEFAULT_WAVE_TIMEOUT = 10.0


class SimulationError(DeviceError):
    """A simulated fleet was given settings it cannot run with."""


def device_ids(prefix: str, count: int) -> list[str]:
    """`<prefix>-00000` … in order; the width fits `count` (at least 4 digits)."""
    width = max(4, len(str(count - 1)))
    return [f"{prefix}-{n:0{width}d}" for n in range(count)]


def _package_version() -> str:
    try:
        return version("mqtt-fleet")[:64]
    except PackageNotFoundError:
        return "0+unknown"


class SimulatedFleet:
    """`count` simulated devices named `<prefix>-<n>`, each with its own MQTT connection."""

    def __init__(
        self,
        url: str,
        count: int,
        prefix: str = "sim",
        heartbeat: float = 30.0,
        task_seconds: float = 0.0,
        failure_rate: float = 0.0,
        groups: Sequence[str] = (),
        username: str | None = None,
        password: str | None = None,
        *,
        keepalive: int = 60,
        wave_size: int = DEFAULT_WAVE,
        wave_timeout: float = DEFAULT_WAVE_TIMEOUT,
        ca_file: Path | None = None,
        seed: int | None = None,
        max_payload_bytes: int | None = None,
        part: tuple[int, int] = (0, 1),
    ) -> None:
        """`part` (index, parts): run only that share of the `count` ids, for one of several
        processes (`device.sim_pool`); `count` then stays the whole fleet's size."""
        _check(count, prefix, heartbeat, task_seconds, failure_rate, groups, keepalive, wave_size, part)
        try:
            addresses = broker_addresses(url)  # one URL, or the nodes of a clustered broker, comma-separated
        except ValueError as exc:
            raise SimulationError(str(exc)) from None
        if not addresses:
            raise SimulationError("no broker URL given")
        address = addresses[0]
        self.address = address
        index, parts = part
        self._ids = device_ids(prefix, count)[index * count // parts:(index + 1) * count // parts]
        self.count = len(self._ids)
        self.wave_size = wave_size
        self.wave_timeout = wave_timeout
        self.counters = SimCounters()
        self._config = SimConfig(
            host=address.host, port=address.port, facts=_facts(groups, keepalive, heartbeat),
            heartbeat=heartbeat, task_seconds=task_seconds, failure_rate=failure_rate, keepalive=keepalive,
            max_payload_bytes=max_payload_bytes or FleetSettings.model_fields["max_payload_bytes"].default,
            rng=random.Random(seed), connect_options=_connect_options(address, username, password, ca_file),
            more_brokers=tuple((other.host, other.port) for other in addresses[1:]),
        )
        self.devices: list[SimulatedDevice] = []
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def ids(self) -> list[str]:
        return list(self._ids)

    @property
    def online(self) -> int:
        """Devices connected and born right now."""
        return self.counters.online

    def device(self, device_id: str) -> SimulatedDevice:
        for device in self.devices:
            if device.device_id == device_id:
                return device
        raise KeyError(device_id)

    async def start(self) -> None:
        """Connect every device, wave by wave; returns once the last wave was started."""
        loop = asyncio.get_running_loop()
        if loop.get_exception_handler() is None:
            loop.set_exception_handler(_quiet_closed_sockets)
        for first in range(0, self.count, self.wave_size):
            wave = [SimulatedDevice(device_id, self._config, self.counters)
                    for device_id in self._ids[first:first + self.wave_size]]
            self.devices.extend(wave)
            self._tasks.extend(asyncio.create_task(device.run(self._stop), name=device.device_id) for device in wave)
            await _all_born(wave, self.wave_timeout)

    async def wait_online(self, timeout: float = 60.0) -> bool:
        """True once every device was born (has connected at least once), False after `timeout`."""
        return await _all_born(self.devices, timeout) and len(self.devices) == self.count

    async def stop(self, timeout: float = 30.0) -> None:
        """Publish each device's retained shutdown status and disconnect; cancel what is left."""
        self._stop.set()
        if self._tasks:
            _done, pending = await asyncio.wait(self._tasks, timeout=timeout)
            for task in pending:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()


def use_selector_loop() -> None:
    """On Windows, make asyncio's loops selector loops: aiomqtt needs `add_reader`, which the
    default proactor loop lacks. Elsewhere nothing changes."""
    if sys.platform == "win32":
        asyncio.set_event_loop_policy(asyncio.WindowsSelectorEventLoopPolicy())  # type: ignore[attr-defined]


def _quiet_closed_sockets(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """aiomqtt asks the loop to watch a socket from paho's callbacks via `call_soon_threadsafe`;
    when a connection closes first (thousands of devices stopping at once), registering the
    closed socket fails with EBADF. Nothing is lost then: drop those, report anything else."""
    exception = context.get("exception")
    if isinstance(exception, OSError) and exception.errno == errno.EBADF:
        log.debug("ignored a socket closed before the event loop could watch it")
        return
    loop.default_exception_handler(context)


async def _all_born(devices: Iterable[SimulatedDevice], timeout: float) -> bool:
    waiting = [asyncio.ensure_future(device.born.wait()) for device in devices if not device.born.is_set()]
    if not waiting:
        return True
    _done, pending = await asyncio.wait(waiting, timeout=timeout)
    for task in pending:
        task.cancel()
    return not pending


def _facts(groups: Sequence[str], keepalive: int, heartbeat: float) -> DeviceFacts:
    hostname = socket.gethostname()[:255] or "unknown"
    return DeviceFacts(
        name="simulated", version=_package_version(), hostname=hostname,
        os=f"simulated on {platform.system() or 'unknown'}"[:200], python=platform.python_version(),
        task_types=sorted(SIMULATED_TYPES), groups=list(groups), max_concurrency=1, keepalive=keepalive,
        heartbeat_interval=max(1, min(3600, round(heartbeat))),
    )


def _connect_options(address: BrokerAddress, username: str | None, password: str | None,
                     ca_file: Path | None) -> dict[str, Any]:
    options: dict[str, Any] = {
        # Nagle's algorithm costs 40+ ms per round trip (docs/architecture.md, measured facts).
        "socket_options": [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
        "max_queued_outgoing_messages": 0,
    }
    user = username if username is not None else address.username
    if user is not None:
        options["username"] = user
        options["password"] = password if password is not None else address.password
    if address.tls:
        options["tls_context"] = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    if address.websocket:
        options["transport"] = "websockets"
        options["websocket_path"] = address.path
    return options


def _check(count: int, prefix: str, heartbeat: float, task_seconds: float, failure_rate: float,
           groups: Sequence[str], keepalive: int, wave_size: int, part: tuple[int, int]) -> None:
    problems = []
    if not 1 <= count <= MAX_DEVICES:
        problems.append(f"devices must be 1–{MAX_DEVICES}, got {count}")
    if not re.fullmatch(DEVICE_ID_PATTERN, f"{prefix}-{count}"):
        problems.append(f"prefix {prefix!r} must be letters, digits, '.', '_' or '-', starting with a letter or digit")
    if not 1 <= heartbeat <= 3600:
        problems.append(f"heartbeat must be 1–3600 seconds, got {heartbeat:g}")
    if not 0 <= task_seconds <= 3600:
        problems.append(f"task seconds must be 0–3600, got {task_seconds:g}")
    if not 0 <= failure_rate <= 1:
        problems.append(f"failure rate must be 0–1, got {failure_rate:g}")
    if not 5 <= keepalive <= 3600:
        problems.append(f"keepalive must be 5–3600 seconds, got {keepalive}")
    if wave_size < 1:
        problems.append(f"wave size must be at least 1, got {wave_size}")
    if not 0 <= part[0] < part[1] <= count:
        problems.append(f"part {part[0]} of {part[1]} does not fit {count} devices")
    problems += [f"group {group!r} is not a valid group name" for group in groups if not re.fullmatch(GROUP_PATTERN, group)]
    if problems:
        raise SimulationError("; ".join(problems))
