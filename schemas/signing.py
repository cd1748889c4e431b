"""Signed task envelopes (optional; seed 002's HMAC-SHA256 scheme): the controller signs every
task it publishes, and a device that has the key runs only tasks whose signature is valid,
whose `signed_at` is fresh and whose `nonce` it has not seen before.

The signature covers the envelope's canonical JSON (sorted keys, no spaces, without the
`signature` field), so no field can be changed or added without breaking it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from datetime import datetime, timedelta

from schemas.common import utcnow
from schemas.errors import WireErrorCode
from schemas.tasks import TaskEnvelope

MAX_AGE = timedelta(minutes=5)


def canonical(envelope: TaskEnvelope) -> bytes:
    data = envelope.model_dump(mode="json", exclude={"signature"}, exclude_none=True)
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


def sign(envelope: TaskEnvelope, key: bytes, now: datetime | None = None) -> TaskEnvelope:
    stamped = envelope.model_copy(update={"signed_at": now or utcnow(), "nonce": secrets.token_hex(12), "signature": None})
    return stamped.model_copy(update={"signature": hmac.new(key, canonical(stamped), hashlib.sha256).hexdigest()})


def problem(envelope: TaskEnvelope, key: bytes, now: datetime | None = None) -> tuple[WireErrorCode, str] | None:
    """Why a device must refuse this envelope (a rejection code and message), or None."""
    if envelope.signature is None or envelope.signed_at is None or envelope.nonce is None:
        return WireErrorCode.UNSIGNED, "this device runs signed tasks only: signature, signed_at and nonce are required"
    expected = hmac.new(key, canonical(envelope), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, envelope.signature):
        return WireErrorCode.INVALID_SIGNATURE, "the task's signature does not match (wrong key, or the task was altered)"
    age = (now or utcnow()) - envelope.signed_at
    if abs(age) > MAX_AGE:
        return WireErrorCode.STALE_SIGNATURE, f"the task was signed {age.total_seconds():.0f} s ago; at most {MAX_AGE.seconds} s are accepted"
    return None
