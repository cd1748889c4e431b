"""The controller's task-signing key: read from `FLEET_TASK_SIGNING_PRIVATE_KEY_FILE`, or from
`<data dir>/task-signing-key.pem`, which is created (owner-only) on the first start with
`FLEET_TASK_SIGNING=true`. A key file named explicitly is never created: a typo in its path
must not silently start a fleet on a key no device trusts."""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)

from config.settings import FleetSettings
from schemas.errors import ControllerError
from schemas.signing import Signer

SETTING = "FLEET_TASK_SIGNING_PRIVATE_KEY_FILE"


class SigningKeyError(ControllerError):
    """The signing key cannot be read or created; the message names the file and the fix."""


def load_signer(settings: FleetSettings) -> Signer | None:
    """The controller's signer, or None when it does not sign tasks."""
    if not settings.signs_tasks:
        return None
    path = settings.resolved_task_signing_private_key_file
    if settings.task_signing_private_key_file is None and not path.exists():
        _create(path)
    return read_signer(path)


def read_signer(path: Path) -> Signer:
    """The signer of the private key file `path`."""
    return Signer(_read(path))


def _create(path: Path) -> None:
    pem = Ed25519PrivateKey.generate().private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as file:
            file.write(pem)
    except OSError as exc:
        raise SigningKeyError(f"cannot create the task signing key {path}: {exc.strerror}; fix FLEET_DATA_DIR or set {SETTING}") from None


def _read(path: Path) -> Ed25519PrivateKey:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SigningKeyError(f"{SETTING}: cannot read {path}: {exc.strerror}") from None
    try:
        key = load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise SigningKeyError(
            f"{SETTING}: {path} is not an unencrypted PEM private key "
            "(make one with: openssl genpkey -algorithm ed25519 -out key.pem)"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"{SETTING}: {path} holds a {type(key).__name__}; task signing needs an Ed25519 key")
    return key
