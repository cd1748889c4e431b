"""Presence on `devices/<id>/status`: session ids, birth/will/shutdown payloads, stale wills.

Each connection of the daemon is a session `<8 hex boot id>-<n>`. The will registered with
a connection carries that connection's session id, so an `offline` status naming another
session is a stale will (it arrived late) and is answered by publishing the birth again.

The last session announced online is kept in a file of the data directory. Where its will
never came (the broker node it was connected to died), the controller still takes it for
online; before its next birth, or while it cannot announce one (a subscription refused), the
daemon declares that session ended itself (`retire`): also when it is a new process on the
same data directory (restarted, or pointed at another broker node by hand), so the
controller does not take the new birth for another PC taking the id over.
"""

from __future__ import annotations

import logging
import secrets
import threading
from pathlib import Path
from typing import Literal

from schemas.common import utcnow
from schemas.status import DeviceFacts, DeviceStatus

log = logging.getLogger(__name__)

WILL_REASON = "connection lost"
SHUTDOWN_REASON = "shutdown"
SUPERSEDED_REASON = "superseded"  # declared ended by its own daemon (`retire`)


class Presence:
    """Session bookkeeping of one daemon process; safe to use from paho's and asyncio's threads."""

    def __init__(self, device_id: str, facts: DeviceFacts, announced_file: Path | None = None) -> None:
        self.device_id = device_id
        self.facts = facts
        self.boot_id = secrets.token_hex(4)
        self._lock = threading.Lock()
        self._count = 1
        self._used = False  # whether a connection attempt used the current session id
        self._born = False  # birth published in the current session
        self._reborn = False  # birth republished in the current session (after a stale will)
        self._file = announced_file
        self._announced = self._read_announced()  # last session announced online and not ended since
        self._retired: set[str] = set()  # sessions this daemon declared ended

    @property
    def born(self) -> bool:
        """Whether the current session's birth was published."""
        with self._lock:
            return self._born

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
        """The birth payload; marks the current session as born (and announced)."""
        with self._lock:
            self._born = True
            current = f"{self.boot_id}-{self._count}"
            changed = self._announced != current
            self._announced = current
        if changed:
            self._write_announced(current)
        return self._status("online").model_dump_json(exclude_none=True).encode()

    def shutdown(self) -> bytes:
        with self._lock:
            self._announced = None
        self._write_announced(None)
        return self._status("offline", reason=SHUTDOWN_REASON).model_dump_json(exclude_none=True).encode()

    def retire(self) -> tuple[str, bytes] | None:
        """The session last announced online, if it is not the current one, and an `offline`
        status ending it (once); None when there is none."""
        with self._lock:
            ended, current = self._announced, f"{self.boot_id}-{self._count}"
            if ended is None or ended == current:
                return None
            self._announced = None
            self._retired.add(ended)
        self._write_announced(None)
        status = DeviceStatus(device_id=self.device_id, state="offline", session_id=ended, at=utcnow(),
                              reason=f"{SUPERSEDED_REASON} by session {current}")
        return ended, status.model_dump_json(exclude_none=True).encode()

    def claim_rebirth(self, status: DeviceStatus) -> bool:
        """True (once per session) when `status`, seen on the own status topic after the birth,
        is a stale offline status that must be overwritten by a new birth."""
        with self._lock:
            current = f"{self.boot_id}-{self._count}"
            if status.state != "offline" or status.session_id == current or not self._born or self._reborn:
                return False
            if status.session_id in self._retired:
                return False  # our own word that an earlier session ended
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

    def _read_announced(self) -> str | None:
        if self._file is None:
            return None
        try:
            text = self._file.read_text(encoding="utf-8").strip()
        except OSError:
            return None
        return text if 0 < len(text) <= 64 else None

    def _write_announced(self, session_id: str | None) -> None:
        if self._file is None:
            return
        try:
            self._file.write_text(session_id or "", encoding="utf-8")
        except OSError as exc:
            log.warning("cannot record the announced session in %s: %s", self._file, exc.strerror or exc)
