"""Mosquitto configuration as the fleet expects it (used by tests and printed for operators)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from config.settings import DEFAULT_BROKER_MAX_PACKET_BYTES, DEFAULT_BROKER_MAX_QUEUED_MESSAGES

MAX_INFLIGHT_MESSAGES = 100
"""QoS 1 messages Mosquitto sends one client before waiting for its PUBACKs (its default: 20);
the controller acknowledges in its network thread, so a wider window only speeds it up."""

PERSISTENT_CLIENT_EXPIRATION = "7d"
"""How long Mosquitto keeps a persistent session (the controller's) that stays away; without
it, a session of a retired controller client id would be kept, and queued for, for ever."""


@dataclass(frozen=True)
class TlsFiles:
    """PEM files of a TLS listener: the CA that signed the server certificate, and the server's pair."""

    cafile: Path
    certfile: Path
    keyfile: Path


def mosquitto_conf(
    port: int,
    host: str = "127.0.0.1",
    *,
    persistence_dir: Path | None = None,
    password_file: Path | None = None,
    acl_file: Path | None = None,
    pid_file: Path | None = None,
    tls: TlsFiles | None = None,
    max_queued_messages: int = DEFAULT_BROKER_MAX_QUEUED_MESSAGES,
) -> str:
    """A mosquitto.conf for a fleet broker.

    Sized for a fleet: Mosquitto keeps at most `max_queued_messages` QoS 1 messages for a client
    that is behind or away (default 1,000; past it they are silently dropped, after the sender
    got its PUBACK). The controller's session is persistent (fixed client id, clean session
    off), so results published while it is behind or restarting wait for it here: the default
    keeps every result of a broadcast to 10,000 devices several times over (docs/architecture.md,
    "Broker sizing"). Never 0: one release (2.0.16) dropped every message with 0 ("unlimited").
    With `persistence_dir` the queues also survive a broker restart.

    `set_tcp_nodelay true` matters: without it a task round trip took 44 ms instead of
    0.6 ms (docs/architecture.md#measured-facts-the-code-relies-on).
    Without a password file anonymous access is allowed (a lab set-up). With one, each login's
    client id is its user name (`use_username_as_clientid`): a device connects with its id as
    both, and no login can knock another off by connecting with its client id (MQTT lets a new
    connection with a client id close the older one).
    """
    lines = [
        f"listener {port} {host}",
        "set_tcp_nodelay true",
        "max_keepalive 3600",
        f"max_packet_size {DEFAULT_BROKER_MAX_PACKET_BYTES}",  # as the embedded broker: a larger packet disconnects
        f"max_queued_messages {max_queued_messages}",
        f"max_inflight_messages {MAX_INFLIGHT_MESSAGES}",
        f"persistent_client_expiration {PERSISTENT_CLIENT_EXPIRATION}",
    ]
    if tls is not None:
        lines += [f"cafile {tls.cafile.as_posix()}", f"certfile {tls.certfile.as_posix()}", f"keyfile {tls.keyfile.as_posix()}"]
    if password_file is None:
        lines.append("allow_anonymous true")
    else:
        lines += ["allow_anonymous false", f"password_file {password_file.as_posix()}", "use_username_as_clientid true"]
    if acl_file is not None:
        lines.append(f"acl_file {acl_file.as_posix()}")
    if pid_file is not None:
        lines.append(f"pid_file {pid_file.as_posix()}")
    if persistence_dir is None:
        lines.append("persistence false")
    else:
        lines += ["persistence true", f"persistence_location {persistence_dir.as_posix()}/"]
    return "\n".join(lines) + "\n"
