"""Signed task envelopes: Ed25519 signatures bound to the topic a task is published on.

The controller holds the private key and signs every task it publishes; devices hold only
public keys (`FLEET_TASK_SIGNING_PUBLIC_KEYS`), so a device can check a task but never make
one. A device that trusts at least one key runs only tasks that

- carry a `signature`, `signed_at`, `nonce`, `key_id` and `target`,
- are signed by a key it trusts (the envelope's `key_id`, the first 16 hex digits of the
  SHA-256 of the raw public key, picks it),
- verify: the signature covers the envelope's canonical JSON (sorted keys, no spaces, without
  the `signature` field), so no field, the target included, can be changed or added,
- were signed for the topic they arrived on (`target`): a task signed for device A's topic is
  refused on B's topic and on the broadcast or a group topic,
- were signed at most `MAX_AGE` ago (and, for tasks without an id, whose nonce is new: see
  `device.intake`).

Rotation: devices trust the old and the new public key, the controller switches to the new
private key, and the old public key is removed from the devices later.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from schemas.common import utcnow
from schemas.errors import WireErrorCode
from schemas.tasks import TaskEnvelope

# cryptography is imported where a key is used: a device that trusts no key (most) never
# loads it, which keeps the daemon's idle memory down (docs/architecture.md#device-memory).
if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

MAX_AGE = timedelta(minutes=5)

TrustedKeys = Mapping[str, "Ed25519PublicKey"]  # key id → public key


def canonical(envelope: TaskEnvelope) -> bytes:
    data = envelope.model_dump(mode="json", exclude={"signature"}, exclude_none=True)
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


def _raw(public: Ed25519PublicKey) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return public.public_bytes(Encoding.Raw, PublicFormat.Raw)


def public_key_text(public: Ed25519PublicKey) -> str:
    """The raw 32-byte public key in base64: the form `FLEET_TASK_SIGNING_PUBLIC_KEYS` lists."""
    return base64.b64encode(_raw(public)).decode()


def key_id(public: Ed25519PublicKey) -> str:
    """A public key's id: the first 16 hex digits of the SHA-256 of its raw bytes."""
    return hashlib.sha256(_raw(public)).hexdigest()[:16]


def parse_public_key(text: str) -> Ed25519PublicKey:
    """A public key from its base64 text; ValueError saying what is wrong (never the text)."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("a public key must be base64 text (as `fleet task signing-key` prints it)") from None
    if len(raw) != 32:
        raise ValueError(f"an Ed25519 public key is 32 bytes; this one is {len(raw)} bytes")
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    return Ed25519PublicKey.from_public_bytes(raw)


def trusted_keys(texts: list[str]) -> dict[str, Ed25519PublicKey]:
    """The public keys a device trusts, by key id."""
    keys = [parse_public_key(text) for text in texts]
    return {key_id(key): key for key in keys}


@dataclass(frozen=True)
class Signer:
    """The controller's private key and its key id."""

    private_key: Ed25519PrivateKey = field(repr=False)

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self.private_key.public_key()

    @property
    def key_id(self) -> str:
        return key_id(self.public_key)

    def sign(self, envelope: TaskEnvelope, target: str, now: datetime | None = None) -> TaskEnvelope:
        """`envelope` stamped, bound to the topic `target` and signed."""
        stamped = envelope.model_copy(update={
            "signed_at": now or utcnow(), "nonce": secrets.token_hex(12), "key_id": self.key_id,
            "target": target, "signature": None,
        })
        return stamped.model_copy(update={"signature": self.private_key.sign(canonical(stamped)).hex()})


def problem(
    envelope: TaskEnvelope, trusted: TrustedKeys, topic: str, now: datetime | None = None
) -> tuple[WireErrorCode, str] | None:
    """Why a device must refuse this envelope received on `topic` (a code and message), or None."""
    if None in (envelope.signature, envelope.signed_at, envelope.nonce, envelope.key_id, envelope.target):
        return WireErrorCode.UNSIGNED, (
            "this device runs signed tasks only: signature, signed_at, nonce, key_id and target are required"
        )
    assert envelope.signature is not None and envelope.signed_at is not None
    public = trusted.get(envelope.key_id or "")
    if public is None:
        return WireErrorCode.UNKNOWN_SIGNING_KEY, (
            f"the task is signed with key {envelope.key_id}, which this device does not trust; "
            f"it trusts {', '.join(sorted(trusted)) or 'no key'} (FLEET_TASK_SIGNING_PUBLIC_KEYS)"
        )
    from cryptography.exceptions import InvalidSignature

    try:
        public.verify(bytes.fromhex(envelope.signature), canonical(envelope))
    except InvalidSignature:
        return WireErrorCode.INVALID_SIGNATURE, "the task's signature does not match (the task was altered after signing)"
    if envelope.target != topic:
        return WireErrorCode.WRONG_TARGET, (
            f"the task was signed for {envelope.target}, not for {topic} where it arrived; it runs only where it was sent"
        )
    age = (now or utcnow()) - envelope.signed_at
    if abs(age) > MAX_AGE:
        return WireErrorCode.STALE_SIGNATURE, f"the task was signed {age.total_seconds():.0f} s ago; at most {MAX_AGE.seconds} s are accepted"
    return None
