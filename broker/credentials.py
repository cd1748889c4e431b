"""Broker credentials and topic ACLs for the fleet's MQTT identities: the one place that says
what each role may read and write (`rules`), rendered here as Mosquitto's password and ACL files
and by `broker.nats_auth` as a NATS authorization file.

Identities have a role:
- `device`: subscribes to its own task topic, the broadcast topic and its groups' task topics,
  its own status topic and its own (retained) config topic; publishes only its own results,
  status, heartbeat and reported config.
- `controller`: reads every device topic, publishes tasks anywhere and devices' desired config,
  and clears a deleted device's retained status.
- `operator`: publishes tasks (`mosquitto_pub`) and watches results, status and reported config.

Password hashes use Mosquitto 2.0's format (`$7$`: PBKDF2-SHA512, 101 iterations, 12-byte
salt), so the file is what `mosquitto_passwd` writes. NATS takes bcrypt only, so a secret is
hashed twice when it is issued (`hash_for_brokers`; the secret itself is never kept).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import bcrypt

ITERATIONS = 101  # Mosquitto's own default
ROLES = ("device", "controller", "operator")
BCRYPT_COST = 4
"""bcrypt's lowest cost, on purpose: every secret is 192 random bits (`new_secret`), which no
amount of hashing cost makes weaker or stronger, while nats-server checks the hash on every
CONNECT; at cost 11 (`nats server passwd`'s default) a fleet reconnecting after a broker restart
would cost the broker hours of CPU (docs/scaling.md)."""


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = salt if salt is not None else os.urandom(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, ITERATIONS)
    return f"$7${ITERATIONS}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_password(password: str, hashed: str) -> bool:
    """Whether `password` matches a `$7$` hash (or a stored `hash_for_brokers` value)."""
    hashed = split_hashes(hashed)[0]
    try:
        _, kind, iterations, salt, digest = hashed.split("$")
        computed = hashlib.pbkdf2_hmac("sha512", password.encode(), base64.b64decode(salt), int(iterations))
    except ValueError:
        return False
    return kind == "7" and hmac.compare_digest(base64.b64encode(computed).decode(), digest)


def bcrypt_hash(password: str) -> str:
    """A `$2b$` hash as nats-server reads it (it accepts `$2a$`, `$2b$`, `$2x$` and `$2y$`)."""
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(BCRYPT_COST)).decode()


def hash_for_brokers(password: str) -> str:
    """What an identity keeps of its secret: the Mosquitto hash, a space and the bcrypt hash for
    NATS (neither contains a space; 173 characters together)."""
    return f"{hash_password(password)} {bcrypt_hash(password)}"


def split_hashes(stored: str) -> tuple[str, str | None]:
    """(Mosquitto hash, bcrypt hash or None) of a stored `hash_for_brokers` value; identities
    provisioned before NATS support have the Mosquitto hash only."""
    mosquitto, _, nats = stored.partition(" ")
    return mosquitto, nats or None


def new_secret() -> str:
    return secrets.token_urlsafe(24)


@dataclass(frozen=True)
class Identity:
    name: str
    role: str
    password_hash: str
    groups: list[str] = field(default_factory=list)
    nats_password_hash: str | None = None


@dataclass(frozen=True)
class Rule:
    """One topic filter an identity may `read` (subscribe to and receive), `write` (publish to)
    or both (`readwrite`); anything no rule allows is denied."""

    access: str
    pattern: str

    @property
    def reads(self) -> bool:
        return "read" in self.access

    @property
    def writes(self) -> bool:
        return "write" in self.access


def password_file(identities: Iterable[Identity]) -> str:
    return "".join(f"{i.name}:{i.password_hash}\n" for i in sorted(identities, key=lambda i: i.name))


def rules(identity: Identity) -> list[Rule]:
    """What `identity` may read and write: the fleet's topic ACL, for every broker."""
    name = identity.name
    if identity.role == "controller":
        # devices/+/status: to clear a deleted device's retained status (docs/architecture.md#housekeeping)
        return [Rule("read", "devices/#"), Rule("write", "devices/+/tasks"), Rule("write", "devices/+/status"),
                Rule("write", "devices/+/config"),
                Rule("write", "fleet/#")]
    if identity.role == "operator":
        return [Rule("write", "devices/+/tasks"), Rule("write", "fleet/#"), Rule("read", "devices/+/results"),
                Rule("read", "devices/+/status"), Rule("read", "devices/+/config/reported")]
    own = [Rule("read", f"devices/{name}/tasks"), Rule("read", "fleet/broadcast/tasks"),
           Rule("readwrite", f"devices/{name}/status"), Rule("write", f"devices/{name}/results"),
           Rule("write", f"devices/{name}/heartbeat"), Rule("read", f"devices/{name}/config"),
           Rule("write", f"devices/{name}/config/reported")]
    return own + [Rule("read", f"fleet/groups/{group}/tasks") for group in identity.groups]


def acl_file(identities: Iterable[Identity]) -> str:
    """One section per identity; anything not listed is denied."""
    sections = []
    for identity in sorted(identities, key=lambda i: i.name):
        lines = [f"topic {rule.access} {rule.pattern}" for rule in rules(identity)]
        sections.append("\n".join([f"# {identity.role}", f"user {identity.name}", *lines]))
    return "\n\n".join(sections) + "\n"


def write_atomically(path: Path, text: str) -> None:
    """Replace `path` in one step (a broker reloading meanwhile reads the old or the new file).
    The temporary file has a name of its own, so controllers sharing the folder never write
    into each other's."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    temporary = Path(name)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
        temporary.chmod(0o600)
        temporary.replace(path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
