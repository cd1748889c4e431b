"""Releases of the device daemon and the `update` task that installs one (docs/architecture.md#remote-update).

The operator holds an Ed25519 release key (`fleet release keygen`); the controller and every
device that may be updated hold only its public key (FLEET_UPDATE_PUBLIC_KEY). A release is a
wheel of this project; its signature covers `release_message(version, sha256, file_name)`, so
neither the bytes (through their sha256), nor the version, nor the file name can be changed
after signing. The controller checks the signature when a release is published; the device
checks it again, and the downloaded bytes against the sha256, before it unpacks anything: a
controller alone cannot make a device run code the operator did not sign.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from pydantic import Field, HttpUrl

from schemas.common import StrictModel

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

UPDATE_TYPE = "update"
# PEP 440 versions as wheels spell them (letters, digits, dots, `+` for a local version).
VERSION_PATTERN = r"^[0-9][0-9A-Za-z.+_-]{0,63}$"
WHEEL_NAME_PATTERN = r"^[A-Za-z0-9_.]+-[0-9][0-9A-Za-z.+_]*(-[0-9][^-]*)?-[^-]+-[^-]+-[^-]+\.whl$"
SIGNATURE_PATTERN = r"^[0-9a-f]{128}$"
SHA256_PATTERN = r"^[0-9a-f]{64}$"


def release_message(version: str, sha256: str, file_name: str) -> bytes:
    """The bytes a release signature covers: one line each, under a fixed label, so a signature
    of anything else (a task, another project's release) can never pass for a release's."""
    return f"mqtt-fleet release v1\nversion={version}\nsha256={sha256}\nfile={file_name}\n".encode()


def signature_problem(public: Ed25519PublicKey, version: str, sha256: str, file_name: str, signature: str) -> str | None:
    """Why the release signature does not hold (a sentence), or None when it does."""
    from cryptography.exceptions import InvalidSignature

    if not re.fullmatch(SIGNATURE_PATTERN, signature):
        return "the release signature must be 128 hex digits (an Ed25519 signature)"
    try:
        public.verify(bytes.fromhex(signature), release_message(version, sha256, file_name))
    except InvalidSignature:
        return ("the release signature does not match its version, sha256 and file name under the configured "
                "release public key (FLEET_UPDATE_PUBLIC_KEY): signed with another key, or changed after signing")
    return None


def wheel_version(file_name: str) -> str | None:
    """The version a wheel's file name states (`name-version-…whl`), or None if it is no wheel name."""
    if not re.fullmatch(WHEEL_NAME_PATTERN, file_name):
        return None
    return file_name.split("-")[1]


class UpdateParams(StrictModel):
    """`update`: install release `version` from `url` (the controller's signed download link),
    restart into it, and report the old and new versions; see the module docstring."""

    version: str = Field(pattern=VERSION_PATTERN)
    url: HttpUrl
    file_name: str = Field(pattern=WHEEL_NAME_PATTERN, max_length=255)
    size: int = Field(ge=1)
    sha256: str = Field(pattern=SHA256_PATTERN)
    signature: str = Field(pattern=SIGNATURE_PATTERN)
    drain_timeout: float | None = Field(
        None, ge=0, le=3600, description="seconds running tasks get to finish first (default FLEET_UPDATE_DRAIN_TIMEOUT)",
    )
