"""`fleet simulate`: run N simulated devices in this process to load-test a deployment.

The devices (`device/simulator.py`) speak the real wire contract, so the controller sees them
like daemons. This module adds what only a command needs: arguments checked into one error
line, the open-file limit raised for N connections (POSIX only), a summary line every few
seconds, and a clean stop (retained shutdown statuses) on Ctrl-C or after `--duration`.
"""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from contextlib import suppress
from typing import TYPE_CHECKING, Any, Optional

import typer

from broker.connection import BrokerAddress, diagnose_unreachable
from cli.local import read_runtime, settings
from cli.output import console, err_console, fail

if TYPE_CHECKING:  # imported when the command runs: aiomqtt need not load for `fleet --help`
    from device.sim_pool import FleetPool
    from device.simulator import SimulatedFleet

FILES_BESIDES_CONNECTIONS = 256  # log files, the event loop's own pipes, the interpreter's files


def raise_open_file_limit(connections: int) -> str | None:
    """Raise this process's open-file limit to fit `connections` sockets; a warning when it cannot.

    Only where the OS has `resource` (Linux, macOS); Windows has no such per-process limit."""
    try:
        import resource
    except ImportError:
        return None
    wanted = connections + FILES_BESIDES_CONNECTIONS
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return None
    unlimited = hard == resource.RLIM_INFINITY
    try:  # raising the hard limit too needs privileges (root); then fall back to the hard limit
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard if unlimited else max(hard, wanted)))
    except (ValueError, OSError):
        with suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted if unlimited else min(wanted, hard), hard))
    now = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if now == resource.RLIM_INFINITY or now >= wanted:
        return None
    return (f"the open-file limit is {now}, below the {wanted} that {connections} devices need: devices past it "
            f"cannot connect. Raise it (ulimit -n {wanted}) or simulate fewer devices")


def _summary(c: dict[str, int], count: int, started: float) -> str:
    return (f"{time.monotonic() - started:6.1f}s  online {c['online']}/{count}  births {c['births']}  "
            f"tasks {c['tasks_received']} received, {c['tasks_run']} run ({c['succeeded']} ok, {c['failed']} failed, "
            f"{c['rejected']} rejected)  repeats answered {c['duplicates_answered']}  events {c['events_sent']}  "
            f"lost connections {c['connection_losses']}")


async def _simulate(fleet: SimulatedFleet, duration: float | None, every: float) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with suppress(NotImplementedError, RuntimeError, ValueError):  # Windows: Ctrl-C cancels asyncio.run's task
            loop.add_signal_handler(sig, stop.set)
    started = time.monotonic()
    starting = asyncio.create_task(fleet.start())
    try:
        while not stop.is_set():
            with suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every)
            console.print(_summary(fleet.counters.snapshot(), fleet.count, started), highlight=False, soft_wrap=True)
            if starting.done() and fleet.counters.births == 0 and fleet.counters.connect_failures:
                fail(f"no simulated device could connect: {fleet.counters.last_error or 'the broker refused them'}")
            if duration is not None and time.monotonic() - started >= duration:
                break
    finally:
        starting.cancel()
        with suppress(asyncio.CancelledError):
            await starting
        console.print("stopping: publishing each device's shutdown status…", highlight=False)
        await fleet.stop()
        console.print(_summary(fleet.counters.snapshot(), fleet.count, started), highlight=False, soft_wrap=True)


def _simulate_pool(pool: FleetPool, duration: float | None, every: float) -> None:
    """`_simulate` for a fleet over several processes, driven from this (the parent) process."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with suppress(ValueError, OSError):
            signal.signal(sig, lambda _sig, _frame: stop.set())
    started = time.monotonic()
    pool.start()
    try:
        while not stop.wait(every):
            counters = pool.counters
            console.print(_summary(counters, pool.count, started), highlight=False, soft_wrap=True)
            if time.monotonic() - started >= pool.wave_timeout and counters["births"] == 0 and counters["connect_failures"]:
                fail(f"no simulated device could connect: {pool.last_error or 'the broker refused them'}")
            if duration is not None and time.monotonic() - started >= duration:
                break
    finally:
        console.print("stopping: publishing each device's shutdown status…", highlight=False)
        pool.stop()
        console.print(_summary(pool.counters, pool.count, started), highlight=False, soft_wrap=True)


def simulate(
    devices: int = typer.Option(100, "--devices", "-n", help="how many simulated devices (1–100000)"),
    mqtt_url: Optional[str] = typer.Option(
        None, "--mqtt-url", help="broker URL (default: the running `fleet up`'s, else FLEET_MQTT_URL)"),
    prefix: str = typer.Option("sim", help="device ids are <prefix>-00000, <prefix>-00001, …"),
    heartbeat: float = typer.Option(30.0, help="seconds between each device's heartbeats (1–3600)"),
    task_seconds: float = typer.Option(0.0, help="how long each task runs (0–3600 s; `sleep` uses its own seconds)"),
    failure_rate: float = typer.Option(0.0, help="share of tasks that fail (0–1)"),
    group: list[str] = typer.Option([], "--group", "-g", help="a group every device belongs to; repeatable"),
    username: Optional[str] = typer.Option(None, help="MQTT user name of every device (default: the URL's)"),
    password: Optional[str] = typer.Option(None, envvar="FLEET_SIMULATE_PASSWORD",
                                           help="MQTT password (or FLEET_SIMULATE_PASSWORD)", show_default=False),
    keepalive: int = typer.Option(60, help="MQTT keepalive in seconds (5–3600)"),
    wave: int = typer.Option(250, help="devices connecting at once: the next wave starts when these are online"),
    duration: Optional[float] = typer.Option(None, help="stop after this many seconds (default: until Ctrl-C)"),
    every: float = typer.Option(5.0, "--every", help="seconds between summary lines"),
    seed: Optional[int] = typer.Option(None, help="seed of the failure draws and timings, for repeatable runs"),
    processes: int = typer.Option(1, "--processes", "-p", min=1, max=256,
                                  help="worker processes sharing the devices (one event loop each: one per core)"),
) -> None:
    """Run simulated devices (one MQTT connection each, the real wire contract) to load-test a fleet."""
    from device.sim_pool import FleetPool
    from device.simulator import SimulatedFleet, SimulationError, use_selector_loop

    if duration is not None and duration <= 0:
        fail(f"--duration must be more than 0 seconds, got {duration:g}")
    if every <= 0:
        fail(f"--every must be more than 0 seconds, got {every:g}")
    config = settings()
    runtime = read_runtime(config.data_dir)
    url = mqtt_url or (runtime.mqtt_url if runtime and runtime.mqtt_url else str(config.mqtt_url))
    options: dict[str, Any] = dict(prefix=prefix, heartbeat=heartbeat, task_seconds=task_seconds, failure_rate=failure_rate,
                   groups=group, username=username, password=password, keepalive=keepalive, wave_size=wave,
                   ca_file=config.mqtt_ca_file, seed=seed)
    try:
        fleet = FleetPool(url, devices, processes, **options) if processes > 1 else SimulatedFleet(url, devices, **options)
    except SimulationError as exc:
        fail(str(exc))
    address = BrokerAddress.from_url(url)
    problem = diagnose_unreachable(address, config.mqtt_ca_file)
    if problem.startswith(("connection refused", "cannot ", "the broker's TLS", "TLS handshake")):
        fail(f"broker {address} unreachable: {problem}")
    warning = raise_open_file_limit(devices)
    if warning:
        err_console.print(f"[yellow]warning:[/yellow] {warning}", highlight=False)
    use_selector_loop()
    console.print(f"simulating {devices} device(s) {fleet.ids[0]} … {fleet.ids[-1]} on {address}"
                  f"{f' in {processes} processes' if processes > 1 else ''} (Ctrl-C stops)", highlight=False, soft_wrap=True)
    if isinstance(fleet, FleetPool):
        _simulate_pool(fleet, duration, every)
        return
    with suppress(KeyboardInterrupt):
        asyncio.run(_simulate(fleet, duration, every))
