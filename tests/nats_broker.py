"""One nats-server (JetStream and MQTT on) for integration tests of the fleet's logins and ACLs
on NATS: its configuration includes the authorization file the controller keeps current.

Kept minimal on purpose: cluster node configurations come from `broker/nats.py` (branch
failover); `single_node_conf` is the one piece to swap for it.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from tests.harness import Broker, Process, missing_service
from tests.ports import free_port


def nats_binary() -> str:
    binary = shutil.which("nats-server") or ("/usr/sbin/nats-server" if Path("/usr/sbin/nats-server").exists() else None)
    if binary is None:
        missing_service("nats-server is not installed (https://github.com/nats-io/nats-server/releases)")
    return str(binary)


def single_node_conf(conf_dir: Path, client_port: int, mqtt_port: int, auth_file: Path, pid_file: Path) -> str:
    """A nats-server.conf: clients on `client_port`, MQTT on `mqtt_port`, JetStream in
    `conf_dir`, and `auth_file` included (nats-server resolves an include relative to the
    including file's folder, even an absolute path, so it is written relative)."""
    include = os.path.relpath(auth_file, conf_dir)
    return "\n".join([
        f"listen: 127.0.0.1:{client_port}",
        f"server_name: fleet-test-{mqtt_port}",
        f"pid_file: {json.dumps(pid_file.as_posix())}",
        f'jetstream {{ store_dir: "{(conf_dir / f"jetstream-{mqtt_port}").as_posix()}" }}',
        f"mqtt {{ listen: 127.0.0.1:{mqtt_port} }}",
        f"include {include}",
    ]) + "\n"


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
