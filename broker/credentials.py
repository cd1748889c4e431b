"""Broker credentials and topic ACLs for the fleet's MQTT identities, as Mosquitto files.

Identities have a role:
- `device`: subscribes to its own task topic, the broadcast topic and its groups' task topics
  and its own status topic; publishes only its own results, status and heartbeat.
- `controller`: reads every device topic and publishes tasks anywhere.
- `operator`: publishes tasks (`mosquitto_pub`) and watches results and status.

Password hashes use Mosquitto 2.0's format (`$7$`: PBKDF2-SHA512, 101 iterations, 12-byte
salt), so the file is what `mosquitto_passwd` writes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

ITERATIONS = 101  # Mosquitto's own default
ROLES = ("device", "controller", "operator")


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = salt if salt is not None else os.urandom(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, ITERATIONS)
    return f"$7${ITERATIONS}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_password(password: str, hashed: str) -> bool:
    try:
        _, kind, iterations, salt, digest = hashed.split("$")
        computed = hashlib.pbkdf2_hmac("sha512", password.encode(), base64.b64decode(salt), int(iterations))
    except ValueError:
        return False
    return kind == "7" and hmac.compare_digest(base64.b64encode(computed).decode(), digest)


def new_secret() -> str:
    return secrets.token_urlsafe(24)


@dataclass(frozen=True)
class Identity:
    name: str
    role: str
    password_hash: str
    groups: list[str] = field(default_factory=list)


def password_file(identities: Iterable[Identity]) -> str:
    return "".join(f"{i.name}:{i.password_hash}\n" for i in sorted(identities, key=lambda i: i.name))


def _rules(identity: Identity) -> list[str]:
    name = identity.name
    if identity.role == "controller":
        return ["topic read devices/#", "topic write devices/+/tasks", "topic write fleet/#"]
    if identity.role == "operator":
        return ["topic write devices/+/tasks", "topic write fleet/#", "topic read devices/+/results",
                "topic read devices/+/status"]
    rules = [f"topic read devices/{name}/tasks", "topic read fleet/broadcast/tasks",
             f"topic readwrite devices/{name}/status", f"topic write devices/{name}/results",
             f"topic write devices/{name}/heartbeat"]
    return rules + [f"topic read fleet/groups/{group}/tasks" for group in identity.groups]


def acl_file(identities: Iterable[Identity]) -> str:
    """One section per identity; anything not listed is denied."""
    sections = []
    for identity in sorted(identities, key=lambda i: i.name):
        sections.append("\n".join([f"# {identity.role}", f"user {identity.name}", *_rules(identity)]))
    return "\n\n".join(sections) + "\n"


def write_atomically(path: Path, text: str) -> None:
    """Replace `path` in one step (a broker reloading meanwhile reads the old or the new file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text, encoding="utf-8")
    temporary.chmod(0o600)
    temporary.replace(path)
