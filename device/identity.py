"""The device's id: configured, or generated once and kept in `<data_dir>/device_id`."""

from __future__ import annotations

import re
import secrets
import socket
from pathlib import Path

from config import FleetSettings
from schemas.common import DEVICE_ID_PATTERN

ID_FILE_NAME = "device_id"
_SLUG_MAX = 50  # leaves room for "-<6 hex>" within the 64-character limit


def hostname_slug(hostname: str) -> str:
    """The host name reduced to characters a device id may contain (`device` if none remain)."""
    slug = re.sub(r"[^a-z0-9._-]+", "-", hostname.lower())
    slug = re.sub(r"^[^a-z0-9]+", "", slug)[:_SLUG_MAX].rstrip("-._")
    return slug or "device"


def generate_device_id(hostname: str | None = None) -> str:
    """A fresh id `<host name slug>-<6 hex>`."""
    return f"{hostname_slug(hostname if hostname is not None else socket.gethostname())}-{secrets.token_hex(3)}"


def resolve_device_id(settings: FleetSettings) -> str:
    """`settings.device_id`, else the id stored in `<data_dir>/device_id`, else a new id that is
    stored there so the device keeps it across restarts.

    Raises ValueError when the stored file holds something that is not a valid device id.
    """
    if settings.device_id:
        return settings.device_id
    path = Path(settings.data_dir) / ID_FILE_NAME
    if path.is_file():
        return _read_id_file(path)
    device_id = generate_device_id()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(device_id + "\n", encoding="utf-8")
    return device_id


def _read_id_file(path: Path) -> str:
    try:
        stored = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read the device id file {path}: {exc}. {_HOW_TO_FIX}") from None
    if not re.fullmatch(DEVICE_ID_PATTERN, stored):
        raise ValueError(
            f"the device id file {path} does not hold a valid device id (1-64 letters, digits, "
            f"'.', '_' or '-', starting with a letter or digit). {_HOW_TO_FIX}"
        )
    return stored


_HOW_TO_FIX = (
    "Fix its content, delete it to have a new id generated, or set FLEET_DEVICE_ID "
    "(a new id makes the controller see a new device)."
)
