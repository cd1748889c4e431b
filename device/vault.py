"""The session vault on a device: the operator's vault key (FLEET_VAULT_KEY_FILE) and the
AES-256-GCM encryption of an account's browser session with it (docs/architecture.md#the-session-vault).

The key never leaves the device's key file: it is not logged, not sent, and no error message
shows it; errors name keys by their fingerprint only. The blob format is in `schemas.vault`.
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from schemas.errors import DeviceError
from schemas.vault import (
    KEY_BYTES,
    NONCE_BYTES,
    VERSION,
    BlobHeader,
    VaultFormatError,
    associated_data,
    fingerprint,
    read_header,
)

KEY_PREFIX = "fleet-vault-key-v1:"


class VaultError(DeviceError, ValueError):
    """The vault key is missing or unusable, or a blob cannot be opened; the message says why
    (naming keys by fingerprint, never by value)."""


class VaultKeyMismatch(VaultError):
    """The blob was encrypted with another vault key than this device's."""


def generate_key() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


def key_text(key: bytes) -> str:
    """What a key file holds: a prefix naming the format, then 64 hex digits."""
    return f"{KEY_PREFIX}{key.hex()}\n"


def write_key_file(path: Path, key: bytes) -> None:
    """Write a new key file readable by its owner only; never overwrite an existing key."""
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise VaultError(f"{path} already exists; a vault key is never overwritten (backups need it): "
                         "choose another path, or remove the old file yourself") from None
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(key_text(key))


def load_key(path: Path | None) -> bytes:
    """The 32-byte key of a key file; `VaultError` saying what to fix when there is none."""
    if path is None:
        raise VaultError("this device has no vault key: create one with `fleet vault keygen --out FILE` on the "
                         "operator's PC, copy the file here and set FLEET_VAULT_KEY_FILE to its path")
    try:
        text = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise VaultError(f"FLEET_VAULT_KEY_FILE {path} cannot be read ({type(exc).__name__})") from None
    digits = text.removeprefix(KEY_PREFIX).strip()
    if not re.fullmatch(r"[0-9a-fA-F]{64}", digits):
        raise VaultError(f"FLEET_VAULT_KEY_FILE {path} is not a vault key file (expected {KEY_PREFIX} and 64 hex "
                         "digits, as `fleet vault keygen` writes)")
    return bytes.fromhex(digits)


def encrypt(key: bytes, plaintext: bytes, *, platform: str, account: str) -> bytes:
    """A blob: header, then AES-256-GCM of `plaintext` under a fresh random nonce, bound to the
    header, platform and account."""
    header = BlobHeader(VERSION, fingerprint(key), secrets.token_bytes(NONCE_BYTES)).encode()
    return header + AESGCM(key).encrypt(header[-NONCE_BYTES:], plaintext, associated_data(header, platform, account))


def decrypt(key: bytes, blob: bytes, *, platform: str, account: str) -> bytes:
    """The plaintext of a blob made for this platform and account with this key; `VaultError`
    (never a traceback, never key bytes) otherwise."""
    try:
        header = read_header(blob)
    except VaultFormatError as exc:
        raise VaultError(str(exc)) from None
    mine = fingerprint(key)
    if header.key_fingerprint != mine:
        raise VaultKeyMismatch(f"the backup was encrypted with vault key {header.key_fingerprint}; this device has "
                               f"vault key {mine}: give this device the key file the backup was made with")
    raw_header = header.encode()
    try:
        return AESGCM(key).decrypt(header.nonce, blob[len(raw_header):], associated_data(raw_header, platform, account))
    except InvalidTag:
        raise VaultError(f"the backup does not open as {platform} account {account!r}: it was altered, or it belongs "
                         "to another account or platform") from None
