"""The type annotations hold: mypy (with pydantic's plugin, configured in pyproject.toml) finds
no error in any package."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PACKAGES = ["broker", "controller", "device", "schemas", "config"]


def test_mypy_finds_no_type_errors() -> None:
    root = Path(__file__).resolve().parents[1]
    checked = subprocess.run(
        [sys.executable, "-m", "mypy", *PACKAGES], cwd=root, capture_output=True, text=True, timeout=300
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "Success: no issues found" in checked.stdout
