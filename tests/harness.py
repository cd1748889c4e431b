"""Real processes for integration tests: brokers (amqtt via `fleet broker`, Mosquitto),
the controller and device daemons, each on free ports with their own files."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import httpx
import paho.mqtt.client as mqtt
import pytest

from broker.connection import broker_addresses, create_client
from broker.mosquitto import TlsFiles, mosquitto_conf
from config.tls import client_verify
from device.simulator import SimulatedFleet
from schemas.events import FINAL_STATUSES
from tests.ports import PORT_ATTEMPTS, free_port, listens

REQUIRE_SERVICES = os.environ.get("FLEET_REQUIRE_SERVICES") == "1"
T = TypeVar("T")


def missing_service(message: str) -> None:
    """Fail in CI (FLEET_REQUIRE_SERVICES=1), skip with the message elsewhere."""
    if REQUIRE_SERVICES:
        pytest.fail(message)
    pytest.skip(message)


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05, what: str = "condition") -> Any:
    """Poll `predicate` until it returns something truthy; fail with `what` on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class Process:
    """A child process whose output goes to a log file; killed (-9) or stopped on demand."""

    def __init__(self, name: str, argv: list[str], log_dir: Path, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.log_path = log_dir / f"{name}.log"
        self.popen: subprocess.Popen[bytes] | None = None
        self.log_offset = 0

    def start(self) -> None:
        self.log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = open(self.log_path, "ab")
        # cwd is the test's own directory, so no fleet.toml or .env of the checkout is read.
        self.popen = subprocess.Popen(
            self.argv, stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=self.log_path.parent
        )
        log.close()

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def kill(self) -> None:
        """SIGKILL: no chance to clean up, like a crash or a pulled plug."""
        if self.running:
            assert self.popen is not None
            self.popen.kill()
            self.popen.wait(10)

    def stop(self) -> None:
        if self.running:
            assert self.popen is not None
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def output(self) -> str:
        """What the process wrote since its last start."""
        with open(self.log_path, "rb") as log:
            log.seek(self.log_offset)
            return log.read().decode(errors="replace")

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def start_listening(process: Process, port: Callable[[], int], ready: Callable[[], bool], move_to: Callable[[int], None],
                    what: str, timeout: float, may_move: bool) -> None:
    """Start `process` and wait until `ready()`. When it exits because its port was taken
    between `free_port()` and its bind (it says "already in use"), and `may_move`, give it
    another port with `move_to` and start it again."""

    def up() -> bool:
        return process.popen is not None and listens(process.popen.pid, port()) and ready()

    for attempt in range(1, PORT_ATTEMPTS + 1):
        process.start()
        wait_for(lambda: not process.running or up(), timeout, 0.05, what)
        if process.running:
            return
        output = process.output()
        if not (may_move and attempt < PORT_ATTEMPTS and "already in use" in output.lower()):
            raise AssertionError(f"{what}: the process exited:\n{output[-4000:]}")
        move_to(free_port())


def fleet_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "cli", *args]


def base_env(**values: Any) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEET_") or k == "FLEET_REQUIRE_SERVICES"}
    env["PYTHONUNBUFFERED"] = "1"
    for key, value in values.items():
        env[f"FLEET_{key.upper()}"] = value if isinstance(value, str) else json.dumps(value)
    return env


class Broker:
    """A broker process of one kind ("amqtt" or "mosquitto") on a free port."""

    def __init__(
        self, kind: str, work: Path, password_file: Path | None = None, tls: TlsFiles | None = None,
        acl_file: Path | None = None, pid_file: Path | None = None, persistence_dir: Path | None = None,
        max_queued_messages: int | None = None, extra_conf: str = "",
    ) -> None:
        """Mosquitto only: `persistence_dir` keeps sessions and queues across restarts,
        `max_queued_messages` replaces the fleet's sizing, `extra_conf` adds lines to its conf."""
        self.kind = kind
        self.work = work
        self.tls = tls
        self.password_file, self.acl_file = password_file, acl_file
        sizing = {} if max_queued_messages is None else {"max_queued_messages": max_queued_messages}
        self._mosquitto_conf = functools.partial(
            mosquitto_conf, password_file=password_file, acl_file=acl_file, pid_file=pid_file, tls=tls,
            persistence_dir=persistence_dir, **sizing,
        )
        self._extra_conf = extra_conf
        self.started = False
        if kind == "mosquitto":
            binary = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
            if binary is None:
                missing_service("mosquitto is not installed (Debian: apt-get install mosquitto mosquitto-clients)")
            self._binary = str(binary)
        self.process = Process(f"broker-{kind}", [], work)
        self._use_port(free_port())

    def _use_port(self, port: int) -> None:
        """Point the broker's arguments, configuration and URL at `port`."""
        self.port = port
        self.url = f"{'mqtts' if self.tls else 'mqtt'}://127.0.0.1:{port}"
        if self.kind == "mosquitto":
            conf = self.work / f"mosquitto-{port}.conf"
            text = self._mosquitto_conf(port) + self._extra_conf
            if hasattr(os, "geteuid") and os.geteuid() == 0:
                text += "user root\n"  # else it drops to user mosquitto, who cannot read pytest's tmp dir
            conf.write_text(text)
            self.process.argv = [self._binary, "-c", str(conf)]
            return
        self.process.argv = fleet_argv("broker", "--port", str(port))
        acl_file = self.acl_file
        files = {"broker_password_file": str(self.password_file), "broker_acl_file": str(acl_file)} if acl_file else {}
        if self.tls is not None:
            files.update(broker_certfile=str(self.tls.certfile), broker_keyfile=str(self.tls.keyfile))
        files["data_dir"] = str(self.work)  # its retained-message file, apart from the user's data
        self.process.env = base_env(**files) if acl_file else base_env(broker_allow_anonymous="true", **files)

    def start(self) -> None:
        """Start it; on a restart it keeps its port, which its clients know."""
        start_listening(self.process, lambda: self.port, lambda: True, self._use_port,
                        f"{self.kind} broker listening on {self.port}", 15, may_move=not self.started)
        self.started = True

    def kill(self) -> None:
        self.process.kill()


class Controller:
    """`fleet controller` as a process, with its own SQLite database (or the given URL)."""

    def __init__(
        self, broker: Broker, work: Path, database_url: str | None = None, mqtt_url: str | None = None,
        admin_token: str | None = None, own_client_id: bool = True, api_ca: Path | None = None, **settings: Any
    ) -> None:
        """`admin_token`: the one of another controller on the same database (it keeps one);
        `own_client_id` False leaves FLEET_CONTROLLER_CLIENT_ID unset (the controller's default);
        with `api_certfile` and `api_keyfile` in `settings` it serves HTTPS, which `api` checks with `api_ca`."""
        self.broker = broker
        self.data_dir = work / "controller"
        self.database_url = database_url or f"sqlite:///{self.data_dir / 'controller.db'}"
        self.admin_token = admin_token or secrets.token_urlsafe(32)
        self._own_client_id = own_client_id
        self._settings = dict(mqtt_url=mqtt_url or broker.url, database_url=self.database_url,
                              data_dir=str(self.data_dir), admin_token=self.admin_token, **settings)
        self.started = False
        self.process = Process("controller", fleet_argv("controller"), work)
        self.scheme = "https" if "api_certfile" in settings else "http"
        self.api = httpx.Client(timeout=10, headers={"Authorization": f"Bearer {self.admin_token}"},
                                verify=client_verify(api_ca))
        self._use_port(free_port())

    def _use_port(self, port: int) -> None:
        self.port = port
        client_id = {"controller_client_id": f"controller-{port}"} if self._own_client_id else {}
        self.process.env = base_env(api_port=str(port), **client_id, **self._settings)
        self.api.base_url = httpx.URL(f"{self.scheme}://127.0.0.1:{port}")

    def start(self) -> None:
        """Start it and wait until it is healthy; on a restart it keeps its port."""

        def healthy() -> bool:
            try:
                return self.api.get("/healthz").json().get("mqtt_connected") is True
            except httpx.HTTPError:
                return False

        start_listening(self.process, lambda: self.port, healthy, self._use_port,
                        "controller healthy and connected to the broker", 30, may_move=not self.started)
        self.started = True

    def device(self, device_id: str) -> dict[str, Any] | None:
        response = self.api.get(f"/api/v1/devices/{device_id}")
        return response.json() if response.status_code == 200 else None

    def wait_device(self, device_id: str, status: str, timeout: float = 15) -> dict[str, Any]:
        return wait_for(
            lambda: (d := self.device(device_id)) is not None and d["status"] == status and d,
            timeout, what=f"device {device_id} {status}",
        )

    def create_task(self, device_id: str, type_: str, **body: Any) -> dict[str, Any]:
        response = self.api.post("/api/v1/tasks", json={"device_id": device_id, "type": type_, **body})
        assert response.status_code == 201, response.text
        return response.json()

    def task(self, task_id: str) -> dict[str, Any] | None:
        response = self.api.get(f"/api/v1/tasks/{task_id}")
        return response.json() if response.status_code == 200 else None

    def wait_task(self, task_id: str, statuses: set[str] | None = None, timeout: float = 20) -> dict[str, Any]:
        final = statuses or set(FINAL_STATUSES)
        return wait_for(
            lambda: (t := self.task(task_id)) is not None and t["status"] in final and t,
            timeout, what=f"task {task_id} in {sorted(final)}",
        )


class Device:
    """`fleet device` as a process with its own data dir (device id file and journal)."""

    def __init__(self, device_id: str, broker: Broker, work: Path, copy: str = "", **settings: Any) -> None:
        """`copy` names a second daemon with the same id (its own data dir and log)."""
        self.id = device_id
        name = f"device-{device_id}{'-' + copy if copy else ''}"
        self.data_dir = work / name
        settings.setdefault("mqtt_url", broker.url)
        env = base_env(data_dir=str(self.data_dir), device_id=device_id, **settings)
        self.process = Process(name, fleet_argv("device"), work, env)

    def start(self) -> None:
        self.process.start()

    def kill(self) -> None:
        self.process.kill()

    def executions(self, task_id: str) -> int:
        """How many times the daemon started a handler for `task_id` (from its real journal file)."""
        import sqlite3

        path = self.data_dir / f"journal-{self.id}.sqlite3"
        with sqlite3.connect(path) as db:
            return db.execute("SELECT COUNT(*) FROM executions WHERE task_id = ?", (task_id,)).fetchone()[0]


class MqttProbe:
    """A plain MQTT client that records what it receives (the test's own eyes on the wire)."""

    def __init__(self, broker: Broker, *topics: str) -> None:
        self.messages: list[tuple[str, bytes, bool]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._refused: list[str] = []
        self.client = create_client(broker_addresses(broker.url)[0], f"probe-{free_port()}")
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe([(t, 1) for t in topics])
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", broker.port, keepalive=30)
        self.client.loop_start()
        assert self._subscribed.wait(10), "probe could not subscribe"
        # NATS answers a QoS 1 SUBSCRIBE it could not serve with 0x80: a deaf probe, not an empty topic.
        assert not self._refused, f"the broker refused the probe's subscription: {self._refused}"

    def _on_subscribe(self, _c: mqtt.Client, _u: Any, _mid: int, codes: list[Any], _p: Any) -> None:
        self._refused = [str(code) for code in codes if code.is_failure]
        self._subscribed.set()

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((msg.topic, msg.payload, msg.retain))

    def raw_messages(self) -> list[tuple[str, bytes]]:
        with self._lock:
            return [(topic, payload) for topic, payload, _retain in self.messages]

    def json_messages(self, topic: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            items = list(self.messages)
        out = []
        for t, payload, _ in items:
            if topic is None or t == topic:
                try:
                    out.append(json.loads(payload))
                except ValueError:
                    pass
        return out

    def publish(self, topic: str, payload: bytes | str, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(10)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def start_controller_on_embedded_broker(work: Path, processes: list[Process], **settings: str) -> Controller:
    """A fresh anonymous embedded broker and a controller on it, both killed with `processes`:
    for probes about REST or the controller, where the broker kind plays no part."""
    broker = Broker("amqtt", work)
    processes.append(broker.process)
    broker.start()
    controller = Controller(broker, work, **settings)
    processes.append(controller.process)
    controller.start()
    return controller


class SimulatorThread:
    """A `SimulatedFleet` (`fleet simulate`'s library) on an event loop in a thread of its own,
    driven from synchronous test or benchmark code: `sim.call(sim.fleet.start())`."""

    def __init__(self, url: str, count: int, **options: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="simulated-fleet", daemon=True)
        self.thread.start()
        self.fleet: SimulatedFleet = self.call(self._make(url, count, options))

    @staticmethod
    async def _make(url: str, count: int, options: dict[str, Any]) -> SimulatedFleet:
        return SimulatedFleet(url, count, **options)

    def call(self, job: Coroutine[Any, Any, T], timeout: float = 300) -> T:
        return asyncio.run_coroutine_threadsafe(job, self.loop).result(timeout)

    def close(self) -> None:
        """Stop the devices (retained shutdown statuses) and the loop; safe to call twice."""
        if self.loop.is_closed():
            return
        self.call(self.fleet.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()
