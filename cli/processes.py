"""Running the fleet's processes in the foreground: `fleet broker`, `fleet controller`, and
the event-loop plumbing `fleet up` shares (signals, start-up readiness, orderly stop)."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import suppress
from typing import Any, Optional

import typer

from cli.local import settings
from cli.output import console, fail
from config.logging import configure_logging


def _install_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with suppress(NotImplementedError, RuntimeError):  # Windows has no add_signal_handler
            loop.add_signal_handler(sig, stop.set)


async def _finish(tasks: list[asyncio.Future[Any]], done: set[asyncio.Future[Any]], stop: asyncio.Event) -> None:
    """Stop every job, wait for them all, and re-raise the failure of one that ended first."""
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    for task in done:
        task.result()


async def _all_set(events: tuple[asyncio.Event, ...]) -> None:
    for event in events:
        await event.wait()


async def run_until_interrupted(
    *jobs: Coroutine[Any, Any, Any],
    stop: asyncio.Event,
    ready: tuple[asyncio.Event, ...] = (),
    on_ready: Callable[[], None] | None = None,
) -> None:
    """Run the jobs until one ends or the user interrupts; then stop the rest. `on_ready` runs
    once every `ready` event is set, and never if a job fails first (a taken port)."""
    _install_signals(stop)
    tasks: list[asyncio.Future[Any]] = [asyncio.ensure_future(job) for job in jobs]
    try:
        if ready:
            all_ready = asyncio.ensure_future(_all_set(ready))
            stopped = asyncio.ensure_future(stop.wait())
            done, _ = await asyncio.wait([*tasks, all_ready, stopped], return_when=asyncio.FIRST_COMPLETED)
            for waiter in (all_ready, stopped):
                waiter.cancel()
                with suppress(asyncio.CancelledError):
                    await waiter
            if all_ready not in done or stop.is_set():
                await _finish(tasks, {t for t in done if t in tasks}, stop)
                return
        if on_ready is not None:
            on_ready()
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        await _finish(tasks, done, stop)
    finally:
        stop.set()


async def stop_on(stop: asyncio.Event, action: Callable[[], Awaitable[Any]]) -> None:
    await stop.wait()
    await action()


def broker(
    host: Optional[str] = typer.Option(None, metavar="HOST", help="address to listen on (default 127.0.0.1)"),
    port: Optional[int] = typer.Option(None, metavar="PORT",
                                       help="TCP port (default 1884); TLS with FLEET_BROKER_CERTFILE/KEYFILE"),
    ws_port: Optional[int] = typer.Option(None, metavar="PORT",
                                          help="also listen for MQTT over websocket on this port (wss with TLS)"),
) -> None:
    """Run the embedded MQTT broker (amqtt) on its own."""
    config = settings(broker_host=host, broker_port=port, broker_ws_port=ws_port)
    configure_logging(config.log_level)
    from broker.embedded import BrokerConfigError, EmbeddedBroker, PortInUseError

    async def main() -> None:
        embedded = EmbeddedBroker(config)
        stop = asyncio.Event()
        await embedded.start()
        console.print(f"embedded MQTT broker listening on {', '.join(embedded.urls)} (Ctrl-C stops it)", highlight=False)
        await run_until_interrupted(stop_on(stop, embedded.stop), stop=stop)

    try:
        asyncio.run(main())
    except (PortInUseError, BrokerConfigError) as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        pass


def controller(
    api_host: Optional[str] = typer.Option(None, metavar="HOST", help="address of the REST API (default 127.0.0.1)"),
    api_port: Optional[int] = typer.Option(None, metavar="PORT", help="port of the REST API (default 8080)"),
) -> None:
    """Run the controller: REST API, MQTT client and SQL store (FLEET_MQTT_URL, FLEET_DATABASE_URL)."""
    config = settings(api_host=api_host, api_port=api_port)
    configure_logging(config.log_level)
    from controller.server import run_controller

    run_controller(config)
