"""Sessions the controller hears only through their heartbeats: their birth was lost.

A device announces each session with a retained birth on its status topic, and the controller
takes it for online, and re-sends its unfinished tasks, only then. A birth can be lost: a
broker that drops messages for a controller that fell behind, a retained message lost in a
broker crash, a controller that was down and whose session expired. The device's heartbeats
still arrive, but name a session the controller does not know, so they were held for
`REHOLD_FOR` seconds (the birth may just be late) and then ignored: the device stayed offline,
and the sweeper, which re-sends only to online devices, never re-sent its tasks.

Now a session that sends `BIRTH_AFTER` heartbeats in a row (distinct ones, by their `at`)
without its birth being recorded counts as born: `stage_births` records the birth the device
would have sent (its facts stay those of its last birth), and the ingest writer re-dispatches
its pending tasks as for any birth. A late birth recorded afterwards is the same session: it
only brings the facts.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from controller.services import devices
from schemas.status import DeviceStatus, Heartbeat

log = logging.getLogger(__name__)

BIRTH_AFTER = devices.HEARTBEAT_MISSES  # as many heartbeats as a device may miss before it counts as gone


@dataclass
class _Unborn:
    session_id: str
    last_at: datetime
    beats: int


class UnbornSessions:
    """Counts, per device, the heartbeats of a session whose birth is not recorded (writer thread only)."""

    def __init__(self, birth_after: int = BIRTH_AFTER) -> None:
        self._birth_after = birth_after
        self._sessions: dict[str, _Unborn] = {}

    def note(self, written: Mapping[str, Heartbeat], unmatched: set[str]) -> dict[str, Heartbeat]:
        """Given heartbeats just written and the devices among them whose session was not the
        current one, the heartbeats whose session now counts as born (forgotten here)."""
        born: dict[str, Heartbeat] = {}
        for device_id, beat in written.items():
            seen = self._sessions.get(device_id)
            if device_id not in unmatched:
                self._sessions.pop(device_id, None)
            elif seen is None or seen.session_id != beat.session_id:
                self._sessions[device_id] = _Unborn(beat.session_id, beat.at, 1)
            elif beat.at > seen.last_at:
                seen.last_at, seen.beats = beat.at, seen.beats + 1
            if device_id in self._sessions and self._sessions[device_id].beats >= self._birth_after:
                born[device_id] = beat
                del self._sessions[device_id]
        return born


def stage_births(session: Session, born: Mapping[str, Heartbeat]) -> None:
    """Record the births of sessions known only from their heartbeats, and those heartbeats, in
    the caller's transaction without committing it."""
    for device_id, beat in born.items():
        log.warning("device %s heartbeats in session %s, whose birth never arrived: taken as born",
                    device_id, beat.session_id)
        status = DeviceStatus(device_id=device_id, state="online", session_id=beat.session_id, at=beat.at,
                              reason=f"no birth: {BIRTH_AFTER} heartbeats of this session came without it")
        devices.stage_status(session, device_id, status)
    devices.stage_heartbeats(session, born)
