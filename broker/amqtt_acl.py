"""amqtt plugins that give the embedded broker the same logins and topic ACLs as Mosquitto:
they read the password file (`mosquitto_passwd` format, `$7$` hashes) and the ACL file
(`user NAME` / `topic read|write|readwrite PATTERN`) the controller writes (see
`broker.credentials`). Both files are read again whenever they change, so provisioning and
revocation take effect without restarting the broker. One rule goes beyond Mosquitto: a client id
that names a provisioned identity may be used only by that identity's login.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from amqtt.contexts import Action
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin

from broker.credentials import verify_password

log = logging.getLogger(__name__)


class _Watched:
    """A file's parsed content, parsed again when its modification time changes."""

    def __init__(self, path: Path, parse: Any) -> None:
        self._path, self._parse = path, parse
        self._stamp: float | None = None
        self._value: Any = parse("")

    def get(self) -> Any:
        try:
            stamp = self._path.stat().st_mtime_ns
        except OSError:
            return self._parse("")  # no file: nobody is allowed
        if stamp != self._stamp:
            self._value, self._stamp = self._parse(self._path.read_text(encoding="utf-8")), stamp
        return self._value


def parse_passwords(text: str) -> dict[str, str]:
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line and not line.startswith("#"))


def parse_acl(text: str) -> dict[str, list[tuple[str, str]]]:
    """user → [(access, pattern)], access being read, write or readwrite."""
    rules: dict[str, list[tuple[str, str]]] = {}
    user: str | None = None
    for line in (raw.strip() for raw in text.splitlines()):
        words = line.split()
        if len(words) == 2 and words[0] == "user":
            user = words[1]
            rules.setdefault(user, [])
        elif len(words) == 3 and words[0] == "topic" and user is not None:
            rules[user].append((words[1], words[2]))
    return rules


def matches(pattern: str, topic: str) -> bool:
    """MQTT filter matching; a wildcard in `topic` (a subscription) is matched only by the same
    or a wider wildcard in `pattern`."""
    pattern_levels, topic_levels = pattern.split("/"), topic.split("/")
    for index, level in enumerate(pattern_levels):
        if level == "#":
            return True
        if index >= len(topic_levels):
            return False
        if level != "+" and level != topic_levels[index]:
            return False
        if topic_levels[index] == "#":
            return False
    return len(pattern_levels) == len(topic_levels)


class FleetPasswordAuth(BaseAuthPlugin):
    """Admits a client whose user name and password match the password file. A client id that
    is the name of a provisioned identity is reserved for that identity's login, so one device
    cannot knock another offline by connecting with its id (Mosquitto has no such rule)."""

    @dataclass
    class Config:
        password_file: str = ""

    def __init__(self, context: Any) -> None:
        super().__init__(context)
        self._passwords = _Watched(Path(self.context.config.password_file), parse_passwords)

    def logins(self) -> dict[str, str]:
        """Login → hash, as the password file says now (read again when it changed)."""
        passwords: dict[str, str] = self._passwords.get()
        return passwords

    async def authenticate(self, *, session: Any) -> bool | None:
        passwords: dict[str, str] = self._passwords.get()
        hashed = passwords.get(session.username or "")
        if hashed is None or session.password is None or not verify_password(session.password, hashed):
            return False
        if session.client_id in passwords and session.client_id != session.username:
            log.warning(
                "login %s refused: client id %s belongs to identity %s (connect with your own name as client id)",
                session.username, session.client_id, session.client_id,
            )
            return False
        return True


class FleetTopicAcl(BaseTopicPlugin):
    """Allows publishing where the user may write, and subscribing and receiving where it may read."""

    @dataclass
    class Config:
        acl_file: str = ""
        unused: list[str] = field(default_factory=list)

    def __init__(self, context: Any) -> None:
        super().__init__(context)
        self._acl = _Watched(Path(self.context.config.acl_file), parse_acl)

    async def topic_filtering(self, *, session: Any = None, topic: str | None = None, action: Action | None = None) -> bool:
        if session is None or topic is None or not session.username:
            return False
        needed = "write" if action == Action.PUBLISH else "read"
        rules = self._acl.get().get(session.username, [])
        return any(needed in access and matches(pattern, topic) for access, pattern in rules)
