"""Presence on `devices/<id>/status`: session ids, birth/will/shutdown payloads, stale wills.

Each connection of the daemon is a session `<8 hex boot id>-<n>`. The will registered with
a connection carries that connection's session id, so an `offline` status naming another
session is a stale will (it arrived late) and is answered by publishing the birth again.
"""

from __future__ import annotations

import secrets
import threading
from typing import Literal

from schemas.common import utcnow
from schemas.status import DeviceFacts, DeviceStatus

WILL_REASON = "connection lost"
SHUTDOWN_REASON = "shutdown"


class Presence:
    """Session bookkeeping of one daemon process; safe to use from paho's and asyncio's threads."""

    def __init__(self, device_id: str, facts: DeviceFacts) -> None:
        self.device_id = device_id
        self.facts = facts
        self.boot_id = secrets.token_hex(4)
        self._lock = threading.Lock()
        self._count = 1
        self._used = False  # whether a connection attempt used the current session id
        self._born = False  # birth published in the current session
        self._reborn = False  # birth republished in the current session (after a stale will)

    @property
    def session_id(self) -> str:
        with self._lock:
            return f"{self.boot_id}-{self._count}"

    def next_session(self) -> str:
        """The session id of the connection about to be attempted (call before each attempt)."""
        with self._lock:
            if self._used:
                self._count += 1
            self._used = True
            self._born = self._reborn = False
            return f"{self.boot_id}-{self._count}"

    def will(self) -> bytes:
        return self._status("offline", reason=WILL_REASON).model_dump_json(exclude_none=True).encode()

    def birth(self) -> bytes:
        """The birth payload; marks the current session as born."""
        with self._lock:
            self._born = True
        return self._status("online").model_dump_json(exclude_none=True).encode()

    def shutdown(self) -> bytes:
        return self._status("offline", reason=SHUTDOWN_REASON).model_dump_json(exclude_none=True).encode()

    def claim_rebirth(self, status: DeviceStatus) -> bool:
        """True (once per session) when `status`, seen on the own status topic after the birth,
        is a stale offline status that must be overwritten by a new birth."""
        with self._lock:
            current = f"{self.boot_id}-{self._count}"
            if status.state != "offline" or status.session_id == current or not self._born or self._reborn:
                return False
            self._reborn = True
            return True

    def _status(self, state: Literal["online", "offline"], reason: str | None = None) -> DeviceStatus:
        return DeviceStatus(
            device_id=self.device_id,
            state=state,
            session_id=self.session_id,
            at=None if reason == WILL_REASON else utcnow(),  # a will's publish time is unknown
            reason=reason,
            facts=self.facts if state == "online" else None,
        )
