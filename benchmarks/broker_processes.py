"""The brokers `benchmarks.broker_throughput` measures, each started as its own process on a
free loopback port: the fleet's embedded broker, a stock amqtt broker without the fleet's
overrides (served by `python -m benchmarks.broker_throughput --serve-stock PORT`), and Mosquitto
with the fleet's configuration."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.ports import free_port

ROOT = Path(__file__).parents[1]


def wait_listening(port: int, process: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on {port}")


@contextmanager
def running_broker(kind: str, work: Path) -> Iterator[int]:
    """Start one broker process on a free loopback port; yield the port; stop it."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEET_")}
    if kind == "embedded":
        argv = [sys.executable, "-m", "cli", "broker", "--port", str(port)]
        env.update(FLEET_BROKER_ALLOW_ANONYMOUS="true", FLEET_LOG_LEVEL="WARNING", FLEET_DATA_DIR=str(work))
    elif kind == "stock-amqtt":
        argv = [sys.executable, "-m", "benchmarks.broker_throughput", "--serve-stock", str(port)]
    else:
        from broker.mosquitto import mosquitto_conf

        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        conf = work / "mosquitto.conf"
        text = mosquitto_conf(port) + "log_type error\n"
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            text += "user root\n"
        conf.write_text(text)
        argv = [binary, "-c", str(conf)]
    log = open(work / f"{kind}.log", "wb")
    process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    try:
        wait_listening(port, process, kind)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def serve_stock(port: int) -> None:
    """A plain amqtt broker, no overrides, anonymous, on 127.0.0.1:port."""
    import logging

    from amqtt.broker import Broker

    logging.basicConfig(level=logging.WARNING)

    async def main() -> None:
        broker = Broker({
            "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        })
        await broker.start()
        await asyncio.Event().wait()

    asyncio.run(main())
