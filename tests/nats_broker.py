"""One nats-server (JetStream and MQTT on) for integration tests of the fleet's logins and ACLs
on NATS: its configuration includes the authorization file the controller keeps current.

Its configuration, like the cluster's (`tests/nats_cluster.py`), comes from `broker/nats.py`.
"""

from __future__ import annotations

import os
from pathlib import Path

from broker.nats import NatsNode, nats_conf
from tests.harness import Broker, Process
from tests.nats_cluster import nats_binary
from tests.ports import free_port


def single_node_conf(conf_dir: Path, client_port: int, mqtt_port: int, auth_file: Path, pid_file: Path) -> str:
    """A nats-server.conf (`broker.nats.nats_conf`, no peers): clients on `client_port`, MQTT on
    `mqtt_port`, JetStream in `conf_dir`, and `auth_file` included."""
    node = NatsNode(f"fleet-test-{mqtt_port}", client_port, mqtt_port, cluster_port=0)
    return nats_conf(node, [], conf_dir / f"jetstream-{mqtt_port}",
                     include=Path(os.path.relpath(auth_file, conf_dir)), pid_file=pid_file)


class NatsBroker(Broker):
    """nats-server with its MQTT listener on a free port (`port`, `url`, as `Broker`'s; the
    base class's set-up is Mosquitto's and is not run)."""

    def __init__(self, work: Path, auth_file: Path, pid_file: Path) -> None:
        self.kind, self.work, self.tls = "nats", work, None
        self.password_file = self.acl_file = None
        self.auth_file, self.pid_file = auth_file, pid_file
        self.started = False
        self._binary = nats_binary()
        self.process = Process("broker-nats", [], work)
        self._use_port(free_port())

    def _use_port(self, port: int) -> None:
        self.port, self.client_port = port, free_port()
        self.url = f"mqtt://127.0.0.1:{port}"
        conf = self.work / f"nats-{port}.conf"
        conf.write_text(single_node_conf(self.work, self.client_port, port, self.auth_file, self.pid_file))
        self.process.argv = [self._binary, "-c", str(conf)]
