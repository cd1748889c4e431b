"""Real processes for integration tests: brokers (amqtt via `fleet broker`, Mosquitto),
the controller and device daemons, each on free ports with their own files."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import signal
import socket
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

from broker.connection import BrokerAddress, create_client
from broker.mosquitto import TlsFiles, mosquitto_conf
from device.simulator import SimulatedFleet
from schemas.events import FINAL_STATUSES

REQUIRE_SERVICES = os.environ.get("FLEET_REQUIRE_SERVICES") == "1"
T = TypeVar("T")


def missing_service(message: str) -> None:
    """Fail in CI (FLEET_REQUIRE_SERVICES=1), skip with the message elsewhere."""
    if REQUIRE_SERVICES:
        pytest.fail(message)
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class Process:
    """A child process whose output goes to a log file; killed (-9) or stopped on demand."""

    def __init__(self, name: str, argv: list[str], log_dir: Path, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.log_path = log_dir / f"{name}.log"
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
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

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


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
        self.port = free_port()
        self.url = f"{'mqtts' if tls else 'mqtt'}://127.0.0.1:{self.port}"
        if kind == "mosquitto":
            binary = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
            if binary is None:
                missing_service("mosquitto is not installed (Debian: apt-get install mosquitto mosquitto-clients)")
            conf = work / f"mosquitto-{self.port}.conf"
            sizing = {} if max_queued_messages is None else {"max_queued_messages": max_queued_messages}
            text = mosquitto_conf(self.port, password_file=password_file, acl_file=acl_file, pid_file=pid_file, tls=tls,
                                  persistence_dir=persistence_dir, **sizing) + extra_conf
            if hasattr(os, "geteuid") and os.geteuid() == 0:
                text += "user root\n"  # else it drops to user mosquitto, who cannot read pytest's tmp dir
            conf.write_text(text)
            argv = [str(binary), "-c", str(conf)]
            env = None
        else:
            argv = fleet_argv("broker", "--port", str(self.port))
            files = {"broker_password_file": str(password_file), "broker_acl_file": str(acl_file)} if acl_file else {}
            if tls is not None:
                files.update(broker_certfile=str(tls.certfile), broker_keyfile=str(tls.keyfile))
            files["data_dir"] = str(work)  # its retained-message file, apart from the user's data
            env = base_env(**files) if acl_file else base_env(broker_allow_anonymous="true", **files)
        self.process = Process(f"broker-{kind}", argv, work, env)

    def start(self) -> None:
        self.process.start()
        wait_for(lambda: port_open(self.port) or not self.process.running, 15, what=f"{self.kind} broker on {self.port}")
        assert self.process.running, f"{self.kind} broker died:\n{self.process.log_tail()}"

    def kill(self) -> None:
        self.process.kill()


class Controller:
    """`fleet controller` as a process, with its own SQLite database (or the given URL)."""

    def __init__(
        self, broker: Broker, work: Path, database_url: str | None = None, mqtt_url: str | None = None, **settings: Any
    ) -> None:
        self.broker = broker
        self.port = free_port()
        self.data_dir = work / "controller"
        self.database_url = database_url or f"sqlite:///{self.data_dir / 'controller.db'}"
        self.admin_token = secrets.token_urlsafe(32)
        env = base_env(
            mqtt_url=mqtt_url or broker.url, database_url=self.database_url, api_port=str(self.port),
            data_dir=str(self.data_dir), controller_client_id=f"controller-{self.port}", admin_token=self.admin_token,
            **settings,
        )
        self.process = Process("controller", fleet_argv("controller"), work, env)
        self.api = httpx.Client(
            base_url=f"http://127.0.0.1:{self.port}", timeout=10, headers={"Authorization": f"Bearer {self.admin_token}"}
        )

    def start(self) -> None:
        self.process.start()

        def healthy() -> bool:
            assert self.process.running, f"controller died:\n{self.process.log_tail()}"
            try:
                return self.api.get("/healthz").json().get("mqtt_connected") is True
            except httpx.HTTPError:
                return False

        wait_for(healthy, 30, 0.1, "controller healthy and connected to the broker")

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
        self.client = create_client(BrokerAddress.from_url(broker.url), f"probe-{free_port()}")
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe([(t, 1) for t in topics])
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", broker.port, keepalive=30)
        self.client.loop_start()
        assert self._subscribed.wait(10), "probe could not subscribe"

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


class RawClient:
    """A raw MQTT login, to try what a compromised PC would."""

    def __init__(self, port: int, user: str, password: str) -> None:
        self.connected = threading.Event()
        self.refused: Any = None
        self.granted: dict[str, bool] = {}
        self.received: list[str] = []
        self._subacks: dict[int, list[str]] = {}
        # Held from SUBSCRIBE until its mid is recorded: a SUBACK that beats `subscribe()` back
        # waits in `_on_subscribe` instead of being matched against nothing and lost.
        self._subscribing = threading.Lock()
        self.client = create_client(BrokerAddress.from_url(f"mqtt://{user}:{password}@127.0.0.1:{port}"), f"raw-{user}")
        self.client.reconnect_delay_set(30, 30)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = lambda _c, _u, message: self.received.append(message.topic)
        self.client.connect_async("127.0.0.1", port, keepalive=30)
        self.client.loop_start()

    def _on_connect(self, _c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            self.refused = reason
        self.connected.set()

    def _on_subscribe(self, _c: mqtt.Client, _u: Any, mid: int, codes: list[Any], _p: Any) -> None:
        with self._subscribing:
            topics = self._subacks.pop(mid, [])
        for topic, code in zip(topics, codes, strict=True):
            self.granted[topic] = not code.is_failure

    def subscribe(self, *topics: str) -> None:
        with self._subscribing:
            _rc, mid = self.client.subscribe([(t, 1) for t in topics])
            self._subacks[mid] = list(topics)
        wait_for(lambda: all(t in self.granted for t in topics), 10, what=f"SUBACK for {topics}")

    def publish(self, topic: str, payload: dict[str, Any]) -> None:
        self.client.publish(topic, json.dumps(payload), qos=1).wait_for_publish(10)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def provision(env: dict[str, str], work: Path, name: str, role: str) -> str:
    """`fleet identity add` against the controller's database; returns the login's password."""
    result = subprocess.run(fleet_argv("identity", "add", name, "--role", role), env=env, cwd=work,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.split("shown once):", 1)[1].split()[0]


class LockedFleet:
    """A broker that admits provisioned logins only (password and ACL files kept by the
    controller), a controller logged in as `fleet-controller`, and an operator login `ops`."""

    def __init__(self, kind: str, work: Path, processes: list[Process], **controller_settings: str) -> None:
        files = work / "broker-files"
        password_file, acl_file, pid_file = files / "passwd", files / "acl", files / "mosquitto.pid"
        broker_settings = {"broker_password_file": str(password_file), "broker_acl_file": str(acl_file)}
        if kind == "mosquitto":
            broker_settings["broker_pid_file"] = str(pid_file)
        env = base_env(database_url=f"sqlite:///{work / 'controller' / 'controller.db'}",
                       data_dir=str(work / "controller"), **broker_settings)
        self.controller_secret = provision(env, work, "fleet-controller", "controller")
        self.operator_secret = provision(env, work, "ops", "operator")
        self.broker = Broker(kind, work, password_file=password_file, acl_file=acl_file, pid_file=pid_file)
        processes.append(self.broker.process)
        self.broker.start()
        if kind == "mosquitto":  # written once it has read its files
            wait_for(pid_file.exists, 10, what="mosquitto's pid file")
        login = f"mqtt://fleet-controller:{self.controller_secret}@127.0.0.1:{self.broker.port}"
        self.controller = Controller(self.broker, work, mqtt_url=login, keepalive="5", **broker_settings,
                                     **controller_settings)
        processes.append(self.controller.process)
        self.controller.start()


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
