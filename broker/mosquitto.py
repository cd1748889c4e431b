"""Mosquitto configuration as the fleet expects it (used by tests and printed for operators)."""

from __future__ import annotations

from pathlib import Path


def mosquitto_conf(port: int, host: str = "127.0.0.1", *, persistence_dir: Path | None = None) -> str:
    """A mosquitto.conf for a fleet broker.

    `set_tcp_nodelay true` matters: without it a task round trip took 44 ms instead of
    0.6 ms (DESIGN.md). Anonymous access is for a lab; production adds password/ACL files.
    """
    lines = [
        f"listener {port} {host}",
        "allow_anonymous true",
        "set_tcp_nodelay true",
        "max_keepalive 3600",
    ]
    if persistence_dir is None:
        lines.append("persistence false")
    else:
        lines += ["persistence true", f"persistence_location {persistence_dir.as_posix()}/"]
    return "\n".join(lines) + "\n"
