"""A clustered fleet broker for tests: several nats-server processes (JetStream and MQTT on
each) on free ports, routed to each other; a node can be killed (SIGKILL) and started again.

`ready()` waits on the real condition a fleet needs, not on a delay: on every live node a
probe's QoS 1 subscription is granted, which needs JetStream's meta leader and the MQTT streams
(NATS refuses or leaves unanswered a QoS 1 subscription until then).
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt

from broker.connection import BrokerAddress, create_client
from broker.nats import NatsNode, nats_conf
from tests.harness import Process, missing_service, start_listening, wait_for
from tests.ports import PORT_ATTEMPTS, free_port

NATS_SERVER = "/usr/sbin/nats-server"


def nats_binary() -> str:
    """The nats-server binary; fails in CI, skips elsewhere, when it is not installed."""
    binary = shutil.which("nats-server") or (NATS_SERVER if Path(NATS_SERVER).exists() else None)
    if binary is None:
        missing_service("nats-server is not installed (Debian: apt-get install nats-server)")
    return str(binary)


class NatsCluster:
    """`size` nodes; `url` lists every node's MQTT URL starting at node 0 (`url_from(i)`: at node i).
    Quacks like `tests.harness.Broker` for Controller, Device and MqttProbe (kind, url, port)."""

    kind = "nats"

    def __init__(self, work: Path, size: int = 3, include: Path | None = None) -> None:
        self._binary = nats_binary()
        self.work = work / "nats"
        self.work.mkdir(parents=True, exist_ok=True)
        self.size = size
        self.include = include
        self.nodes: list[NatsNode] = []
        self.processes: list[Process] = [Process(f"nats-n{i}", [], self.work) for i in range(size)]
        self._probes = 0
        self.started = False
        self._pick_ports()

    def _pick_ports(self) -> None:
        self.nodes = [NatsNode(f"n{i}", free_port(), free_port(), free_port()) for i in range(self.size)]
        for i, node in enumerate(self.nodes):
            conf = self.work / f"{node.name}.conf"
            peers = [peer for peer in self.nodes if peer is not node]
            conf.write_text(nats_conf(node, peers, self.work / f"store-{node.name}", include=self.include))
            self.processes[i].argv = [self._binary, "-c", str(conf)]

    @property
    def url(self) -> str:
        return self.url_from(0)

    @property
    def port(self) -> int:
        return self.nodes[0].mqtt_port

    def url_from(self, first: int) -> str:
        """Every node's MQTT URL, node `first` first (a client starts there)."""
        order = self.nodes[first:] + self.nodes[:first]
        return ",".join(node.mqtt_url for node in order)

    def start(self, timeout: float = 60) -> None:
        """Start every node and wait until the cluster serves QoS 1 subscriptions on each; on a
        restart the nodes keep their ports (their clients know them) and JetStream stores."""
        for attempt in range(1, PORT_ATTEMPTS + 1):
            try:
                for i in range(self.size):
                    if not self.processes[i].running:
                        self.start_node(i)
                break
            except AssertionError as exc:  # a port was taken meanwhile: all nodes on new ports
                if self.started or attempt == PORT_ATTEMPTS or "already in use" not in str(exc).lower():
                    raise
                self.kill_all()
                self._pick_ports()
        self.started = True
        self.ready(timeout)

    def start_node(self, index: int) -> None:
        """Start (or restart) node `index` on its ports, with its JetStream store kept."""
        node = self.nodes[index]
        start_listening(self.processes[index], lambda: node.mqtt_port, lambda: True, lambda _port: None,
                        f"nats node {node.name} listening on {node.mqtt_port}", 30, may_move=False)

    def kill_all(self) -> None:
        for process in self.processes:
            process.kill()

    def kill(self, index: int | None = None) -> None:
        """SIGKILL node `index`, or every node (as `Broker.kill` does): no will of their clients is published."""
        if index is None:
            self.kill_all()
        else:
            self.processes[index].kill()

    def alive(self) -> list[int]:
        return [i for i, process in enumerate(self.processes) if process.running]

    def ready(self, timeout: float = 60) -> None:
        """Wait until a QoS 1 subscription is granted on every live node."""
        for index in self.alive():
            wait_for(lambda: self.subscribe_granted(index), timeout, 0.2,
                     f"a QoS 1 subscription granted by nats node n{index}")

    def subscribe_granted(self, index: int, answer_timeout: float = 10) -> bool:
        """One probe client on node `index`: connect, subscribe with QoS 1; True when granted."""
        self._probes += 1
        node = self.nodes[index]
        client = create_client(BrokerAddress.from_url(node.mqtt_url), f"ready-probe-{self._probes}-{time.monotonic_ns()}")
        granted: list[bool] = []
        answered = threading.Event()

        def on_connect(c: mqtt.Client, _u: object, _f: object, reason: object, _p: object) -> None:
            if getattr(reason, "is_failure", False):
                granted.append(False)
                answered.set()
                return
            c.subscribe([(f"fleet-probe/{self._probes}", 1)])

        def on_subscribe(_c: mqtt.Client, _u: object, _mid: int, codes: list[object], _p: object) -> None:
            granted.append(all(not getattr(code, "is_failure", True) for code in codes))
            answered.set()

        client.on_connect = on_connect
        client.on_subscribe = on_subscribe
        client.on_disconnect = lambda *_args: answered.set()
        try:
            client.connect(node.host, node.mqtt_port, keepalive=10)
        except OSError:
            return False
        client.loop_start()
        try:
            answered.wait(answer_timeout)
            return bool(granted) and granted[0]
        finally:
            client.disconnect()
            client.loop_stop()

    def log_tails(self, lines: int = 30) -> str:
        return "\n".join(f"--- {p.name}\n{p.log_tail(lines)}" for p in self.processes)
