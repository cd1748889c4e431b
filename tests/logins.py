"""Logins on a locked broker: a fleet whose broker admits provisioned identities only, and a
raw MQTT client to try what a compromised PC would with one of them."""

from __future__ import annotations

import json
import subprocess
import threading
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from broker.connection import BrokerAddress, create_client
from tests.harness import Broker, Controller, Process, base_env, fleet_argv, wait_for
from tests.nats_broker import NatsBroker


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
    """A broker that admits provisioned logins only (password and ACL files, or NATS's
    authorization file, kept by the controller), a controller logged in as `fleet-controller`,
    and an operator login `ops`."""

    def __init__(self, kind: str, work: Path, processes: list[Process], **controller_settings: str) -> None:
        files = work / "broker-files"
        password_file, acl_file, pid_file = files / "passwd", files / "acl", files / f"{kind}.pid"
        if kind == "nats":
            broker_settings = {"nats_auth_file": str(files / "nats-auth.conf"), "broker_pid_file": str(pid_file)}
        else:
            broker_settings = {"broker_password_file": str(password_file), "broker_acl_file": str(acl_file)}
        if kind == "mosquitto":
            broker_settings["broker_pid_file"] = str(pid_file)
        env = base_env(database_url=f"sqlite:///{work / 'controller' / 'controller.db'}",
                       data_dir=str(work / "controller"), **broker_settings)
        self.controller_secret = provision(env, work, "fleet-controller", "controller")
        self.operator_secret = provision(env, work, "ops", "operator")
        if kind == "nats":
            self.broker: Broker = NatsBroker(work, files / "nats-auth.conf", pid_file)
        else:
            self.broker = Broker(kind, work, password_file=password_file, acl_file=acl_file, pid_file=pid_file)
        processes.append(self.broker.process)
        self.broker.start()
        if kind in ("mosquitto", "nats"):  # written once it has read its files
            wait_for(pid_file.exists, 10, what=f"{kind}'s pid file")
        login = f"mqtt://fleet-controller:{self.controller_secret}@127.0.0.1:{self.broker.port}"
        self.controller = Controller(self.broker, work, mqtt_url=login, keepalive="5", **broker_settings,
                                     **controller_settings)
        processes.append(self.controller.process)
        self.controller.start()
