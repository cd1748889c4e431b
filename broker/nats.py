"""nats-server configuration for one node of a clustered fleet broker (NATS with JetStream and
its MQTT listener), used by tests and printed for operators.

NATS serves MQTT 3.1.1 only with JetStream on: sessions, retained messages and QoS 1
subscriptions live in JetStream streams and consumers, so they survive the loss of the node a
client was connected to (docs/architecture.md#measured-facts-the-code-relies-on says what
NATS 2.9 does and does not do). Every node of a cluster names the others in `routes`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

CLUSTER_NAME = "fleet"


@dataclass(frozen=True)
class NatsNode:
    """Where one node listens: NATS clients, MQTT clients, and the other nodes (cluster routes)."""

    name: str
    client_port: int
    mqtt_port: int
    cluster_port: int
    host: str = "127.0.0.1"

    @property
    def mqtt_url(self) -> str:
        return f"mqtt://{self.host}:{self.mqtt_port}"

    @property
    def route(self) -> str:
        return f"nats-route://{self.host}:{self.cluster_port}"


def _quote(value: str | Path) -> str:
    """A string in nats-server's config syntax (JSON's quoting is a subset of it)."""
    return json.dumps(str(value))


def nats_conf(
    node: NatsNode,
    peers: Sequence[NatsNode],
    store_dir: Path,
    *,
    include: Path | None = None,
    cluster_name: str = CLUSTER_NAME,
    max_file_store: str = "1G",
    max_memory_store: str = "256M",
    stream_replicas: int | None = None,
    pid_file: Path | None = None,
) -> str:
    """The configuration of `node` in a cluster with `peers` (the other nodes; none: a single
    node). `include` names a file with an `authorization { … }` block (per-device logins)
    written elsewhere, relative to the folder this configuration is written in (nats-server
    resolves an include that way, even an absolute path); without it the node lets any client
    in. `pid_file` is where nats-server writes its pid (for the controller's reload signal).

    `stream_replicas` (default: the cluster's size, at most 3) is set explicitly: left to
    itself NATS 2.9 sized the MQTT streams by the nodes it knew when the first MQTT client came,
    which was 2 of 3 while the routes were still forming; killing one node then left
    `$MQTT_sess` and `$MQTT_msgs` without quorum for good (every connect refused)."""
    replicas = stream_replicas if stream_replicas is not None else min(3, len(peers) + 1)
    lines = [
        f"server_name: {_quote(node.name)}",
        f"listen: {_quote(f'{node.host}:{node.client_port}')}",
        "jetstream {",
        f"  store_dir: {_quote(store_dir)}",
        f"  max_file_store: {max_file_store}",
        f"  max_memory_store: {max_memory_store}",
        "}",
        "mqtt {",
        f"  listen: {_quote(f'{node.host}:{node.mqtt_port}')}",
        f"  stream_replicas: {replicas}",
        "}",
    ]
    if pid_file is not None:
        lines.append(f"pid_file: {_quote(pid_file.as_posix())}")
    if peers:
        routes = ", ".join(_quote(peer.route) for peer in peers)
        lines += [
            "cluster {",
            f"  name: {_quote(cluster_name)}",
            f"  listen: {_quote(f'{node.host}:{node.cluster_port}')}",
            f"  routes: [{routes}]",
            "}",
        ]
    if include is not None:
        lines.append(f"include {_quote(include)}")
    return "\n".join(lines) + "\n"
