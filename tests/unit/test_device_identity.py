"""The device's identity: a configured id, a generated one stored once, and a clear error for
a bad stored one.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from config import FleetSettings
from device.identity import resolve_device_id
from schemas.common import DEVICE_ID_PATTERN


def settings(tmp_path: Path, **values: Any) -> FleetSettings:
    return FleetSettings(data_dir=tmp_path, **values)


def test_configured_device_id_wins(tmp_path: Path) -> None:
    assert resolve_device_id(settings(tmp_path, device_id="pc-07")) == "pc-07"
    assert not (tmp_path / "device_id").exists()


def test_generated_device_id_is_stored_once_and_stable(tmp_path: Path) -> None:
    data_dir = tmp_path / "nested" / "data"
    first = resolve_device_id(settings(data_dir))
    assert re.fullmatch(DEVICE_ID_PATTERN, first)
    assert re.fullmatch(r".+-[0-9a-f]{6}", first)
    assert (data_dir / "device_id").read_text(encoding="utf-8").strip() == first
    assert resolve_device_id(settings(data_dir)) == first


def test_stored_device_id_is_read_stripped(tmp_path: Path) -> None:
    (tmp_path / "device_id").write_text("  office-pc \n", encoding="utf-8")
    assert resolve_device_id(settings(tmp_path)) == "office-pc"


@pytest.mark.parametrize("content", ["", "bad id/with slash", "x" * 65, "#wild+"])
def test_invalid_device_id_file_is_a_clear_error(tmp_path: Path, content: str) -> None:
    path = tmp_path / "device_id"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError) as info:
        resolve_device_id(settings(tmp_path))
    message = str(info.value)
    assert str(path) in message and "FLEET_DEVICE_ID" in message and "delete" in message
