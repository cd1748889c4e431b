"""The device's presence bookkeeping: session ids and stale wills, and the duplicate-id guard
that backs off after contested connects.
"""

from __future__ import annotations

import re

from device.presence import Presence
from schemas.status import DeviceFacts, DeviceStatus
from tests.unit.device_kit import DEVICE


def test_session_ids_and_stale_wills() -> None:
    facts = DeviceFacts(name="pc", version="0", hostname="pc", os="x", python="3", max_concurrency=1, keepalive=30)
    presence = Presence(DEVICE, facts)
    first = presence.next_session()
    assert re.fullmatch(r"[0-9a-f]{8}-1", first)
    will = DeviceStatus.model_validate_json(presence.will())
    assert (will.state, will.session_id, will.reason) == ("offline", first, "connection lost")

    stale = will
    second = presence.next_session()
    assert second.endswith("-2") and second != first
    assert not presence.claim_rebirth(stale)  # not born yet: the birth is still coming
    birth = DeviceStatus.model_validate_json(presence.birth())
    assert (birth.state, birth.session_id, birth.facts) == ("online", second, facts)
    assert presence.claim_rebirth(stale)
    assert not presence.claim_rebirth(stale)  # at most once per session
    own_will = DeviceStatus.model_validate_json(presence.will())
    assert not presence.claim_rebirth(own_will)


def test_duplicate_id_guard_confirms_after_three_contested_connects_and_backs_off() -> None:
    from device.conflicts import FIRST_PAUSE, MAX_PAUSE, WINDOW, DuplicateIdGuard

    now = [0.0]
    guard = DuplicateIdGuard(clock=lambda: now[0])
    assert guard.contested() is None  # a PC that lost power takes its old session over once
    now[0] += WINDOW + 1
    assert guard.contested() is None and guard.contested() is None  # the first one aged out
    assert guard.contested() == FIRST_PAUSE
    assert guard.contested() == 2 * FIRST_PAUSE
    for _ in range(10):
        guard.contested()
    assert guard.pause == MAX_PAUSE
    guard.reset()
    assert guard.pause == 0 and guard.contested() is None
