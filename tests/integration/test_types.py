"""Static checks over every package: mypy (with pydantic's plugin) finds no type error, ruff no
unused name and no unsorted import (both configured in pyproject.toml)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

PACKAGES = ["broker", "controller", "device", "schemas", "config", "cli"]


def test_mypy_finds_no_type_errors() -> None:
    root = Path(__file__).resolve().parents[2]
    checked = subprocess.run(
        [sys.executable, "-m", "mypy", *PACKAGES], cwd=root, capture_output=True, text=True, timeout=300
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "Success: no issues found" in checked.stdout


def test_ruff_finds_no_unused_names_or_unsorted_imports() -> None:
    root = Path(__file__).resolve().parents[2]
    checked = subprocess.run([sys.executable, "-m", "ruff", "check", "."], cwd=root, capture_output=True, text=True,
                             timeout=120)
    assert checked.returncode == 0, checked.stdout + checked.stderr
