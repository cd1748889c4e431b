"""The session vault's shared shapes: the encrypted session blob's header, the vault key's
fingerprint, the `session_backup` / `session_restore` task parameters and the REST bodies of
backups and moves (docs/architecture.md#the-session-vault).

A blob is `MAGIC | version (1 byte) | key fingerprint (8 bytes) | nonce (12 bytes) | AES-256-GCM
ciphertext with its 16-byte tag`. The header is not secret: the controller reads it to record
which key a backup needs, and a device reads it to say "encrypted with key X, this device has
key Y" before it tries to decrypt. The whole header is part of the associated data, with the
platform and account, so no byte of it (and no other account's name) can be swapped in.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, HttpUrl

from schemas.common import DeviceId, StrictModel, UtcDatetime
from schemas.errors import FleetError

MAGIC = b"FLEETVLT"
VERSION = 1
FINGERPRINT_BYTES = 8
NONCE_BYTES = 12
TAG_BYTES = 16
HEADER_BYTES = len(MAGIC) + 1 + FINGERPRINT_BYTES + NONCE_BYTES
KEY_BYTES = 32  # AES-256
FINGERPRINT_PATTERN = r"^[0-9a-f]{16}$"


class VaultFormatError(FleetError, ValueError):
    """Bytes that are not a session blob this version reads."""


def fingerprint(key: bytes) -> str:
    """A short public name of a vault key (16 hex digits): which key a blob needs, never the key."""
    return hashlib.sha256(b"fleet-vault-key-fingerprint\0" + key).digest()[:FINGERPRINT_BYTES].hex()


@dataclass(frozen=True)
class BlobHeader:
    version: int
    key_fingerprint: str
    nonce: bytes

    def encode(self) -> bytes:
        return MAGIC + bytes([self.version]) + bytes.fromhex(self.key_fingerprint) + self.nonce


def read_header(blob: bytes) -> BlobHeader:
    """The header of a blob; `VaultFormatError` for anything that is not one."""
    if len(blob) < HEADER_BYTES + TAG_BYTES or not blob.startswith(MAGIC):
        raise VaultFormatError("this is not a fleet session backup (no vault header)")
    version = blob[len(MAGIC)]
    if version != VERSION:
        raise VaultFormatError(f"this session backup has format version {version}; this fleet reads version {VERSION}")
    start = len(MAGIC) + 1
    fp = blob[start:start + FINGERPRINT_BYTES].hex()
    return BlobHeader(version, fp, blob[start + FINGERPRINT_BYTES:HEADER_BYTES])


def associated_data(header: bytes, platform: str, account: str) -> bytes:
    """What the ciphertext is bound to besides the key: its header, platform and account."""
    return header + b"\0" + platform.encode() + b"\0" + account.encode()


# ---- task parameters ----------------------------------------------------------------------


class SessionBackupParams(StrictModel):
    """`session_backup`: encrypt the account's browser session (cookies, localStorage) with the
    device's vault key and PUT it to `upload_url` (a signed link the controller made)."""

    platform: str = Field(min_length=1, max_length=64)
    upload_url: HttpUrl = Field(description="the controller's signed backup link; filled in by the controller")


class SessionRestoreParams(StrictModel):
    """`session_restore`: fetch a backup (signed link), decrypt it with the device's vault key,
    put its cookies and localStorage into the account's profile, then check the login."""

    platform: str = Field(min_length=1, max_length=64)
    blob_url: HttpUrl = Field(description="the controller's signed file link of the backup")
    size: int | None = Field(None, ge=0)
    sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")
    key_fingerprint: str | None = Field(None, pattern=FINGERPRINT_PATTERN, description="the key the backup needs")


# ---- REST bodies ---------------------------------------------------------------------------


class AccountMove(StrictModel):
    device_id: DeviceId = Field(description="the device the account moves to")
    backup_wait: float = Field(
        20.0, ge=0, le=300,
        description="seconds to wait for a fresh backup on the old device when it is online (0: use the last one)",
    )


class AccountBackupOut(BaseModel):
    """A backup's metadata. The controller never has the plaintext: it lacks the vault key."""

    model_config = ConfigDict(from_attributes=True)

    account: str
    platform: str
    file_id: str
    size: int
    sha256: str
    key_fingerprint: str
    taken_at: UtcDatetime
    device_id: str = Field(description="the device that took it")
    task_id: str | None


class AccountMoveOut(BaseModel):
    account: str
    from_device: str
    to_device: str
    fresh_backup: str = Field(description="taken; the backup task's final status when it did not succeed (failed, "
                              "rejected, …); timed_out (canceled after backup_wait); offline (the old device); "
                              "skipped (backup_wait 0)")
    fresh_backup_task_id: str | None
    backup: AccountBackupOut | None = Field(description="the backup restored on the new device, if any")
    restore_task_id: str | None = Field(description="the session_restore task on the new device")
    login_status: str
    message: str
