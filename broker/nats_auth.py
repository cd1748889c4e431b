"""The fleet's logins and topic ACLs as a NATS authorization file, for nats-server's MQTT
listener: one user per identity (its bcrypt hash) with publish and subscribe permissions
translated from `broker.credentials.rules`, the same rules Mosquitto's ACL file is written from.

A nats-server configuration `include`s the file; the server reads it again on a reload (SIGHUP).

MQTT topics are NATS subjects with `/` → `.`, `+` → `*` and `#` → `>`; a filter ending in `#`
also matches its parent (MQTT's `devices/#` matches `devices`), so it becomes two subjects.
nats-server (2.9) cannot carry a `.` or a space in an MQTT topic, so an identity whose name or
group holds one cannot use NATS and is left out, named in the outcome.

MQTT clients need one NATS-internal permission besides their topics: subscribing to
`$MQTT.sub.>`, the deliver subjects of the JetStream consumers behind QoS 1 subscriptions
(nats-server 2.9 checks the client's own permissions there; without it every QoS 1 SUBSCRIBE is
refused with 0x80). It gives nothing away: nats-server refuses an MQTT SUBSCRIBE to a topic
starting `$MQTT/sub/`, and creates such a subscription only after the client was allowed the
topic itself. Retained messages, sessions and JetStream API calls (`$MQTT.JSA.`, `$MQTT.rmsgs`,
`$MQTT.sess.`) go through the server's internal clients, which need no user permission (tested
in tests/integration/test_nats_acl.py). From nats-server 2.12 the `$MQTT.` permissions are
implicit (nats-io/nats-server#7637); the extra allow is harmless there.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

from broker.credentials import Identity, bcrypt_hash, rules
from schemas.errors import BrokerError

QOS1_DELIVERY_SUBJECTS = "$MQTT.sub.>"
PLACEHOLDER_USER = "fleet-nobody"
"""With no users nats-server would admit anyone; this login, whose password nobody knows and
who may do nothing, keeps it locked while no identity is provisioned yet."""


class UnsupportedTopic(BrokerError):
    """An MQTT topic or filter nats-server's MQTT bridge cannot carry."""


def nats_subjects(mqtt_filter: str) -> list[str]:
    """The NATS subjects an MQTT topic filter covers: `devices/+/tasks` → `devices.*.tasks`,
    `devices/#` → `devices` and `devices.>`."""
    levels = mqtt_filter.split("/")
    for index, level in enumerate(levels):
        if level == "" or any(char in level for char in ". *>"):  # '*', '>': NATS wildcards, wider than meant
            raise UnsupportedTopic(f"{mqtt_filter!r}: NATS carries no empty topic level, '.', space, '*' or '>'")
        if ("#" in level and (level != "#" or index != len(levels) - 1)) or ("+" in level and level != "+"):
            raise UnsupportedTopic(f"{mqtt_filter!r}: '#' only as the last level, '+' only as a whole level")
    subjects = [".".join("*" if level == "+" else ">" if level == "#" else level for level in levels)]
    if levels[-1] == "#" and len(levels) > 1:
        subjects.insert(0, ".".join(levels[:-1]))
    return subjects


@dataclass(frozen=True)
class Permissions:
    publish: list[str]
    subscribe: list[str]


def permissions(identity: Identity) -> Permissions:
    """The NATS publish and subscribe allow lists of `identity` (everything else is denied)."""
    publish: list[str] = []
    subscribe: list[str] = []
    for rule in rules(identity):
        subjects = nats_subjects(rule.pattern)
        if rule.writes:
            publish += subjects
        if rule.reads:
            subscribe += subjects
    return Permissions(publish, [*subscribe, QOS1_DELIVERY_SUBJECTS])


def _user(name: str, password_hash: str, allowed: Permissions | None) -> str:
    """One entry of the users list; `allowed` None: may neither publish nor subscribe."""
    def quoted(values: list[str]) -> str:
        return "[" + ", ".join(json.dumps(v) for v in values) + "]"

    if allowed is None:
        publish = subscribe = 'deny: [">"]'
    else:
        publish, subscribe = f"allow: {quoted(allowed.publish)}", f"allow: {quoted(allowed.subscribe)}"
    return (f"    {{user: {json.dumps(name)}, password: {json.dumps(password_hash)}, permissions: {{\n"
            f"      publish: {{{publish}}}\n"
            f"      subscribe: {{{subscribe}}}\n"
            "    }}\n")


def nats_authorization(identities: Iterable[Identity]) -> tuple[str, list[str]]:
    """(the authorization file, why each identity left out of it was left out)."""
    users, left_out = [], []
    for identity in sorted(identities, key=lambda i: i.name):
        if identity.nats_password_hash is None:
            left_out.append(f"{identity.name}: provisioned before NATS support, no bcrypt hash; revoke and provision it again")
            continue
        try:
            allowed = permissions(identity)
        except UnsupportedTopic as exc:
            left_out.append(f"{identity.name}: {exc}")
            continue
        users.append(f"    # {identity.role}\n" + _user(identity.name, identity.nats_password_hash, allowed))
    if not users:
        users.append("    # no identity yet: a login nobody can use keeps the server locked\n"
                     + _user(PLACEHOLDER_USER, bcrypt_hash(secrets.token_urlsafe(24)), None))
    text = ("# Written by the fleet controller (broker/nats_auth.py) on every provision and revoke;\n"
            "# edits are overwritten. A nats-server config includes it; SIGHUP reloads it.\n"
            "authorization {\n  users = [\n" + "".join(users) + "  ]\n}\n")
    return text, left_out
