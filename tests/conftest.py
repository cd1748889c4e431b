"""The two tiers: `tests/unit/` runs in-process in seconds (`pytest -m "not integration"`);
`tests/integration/` starts real brokers, controllers, devices, browsers and databases and
marks every test `integration`. A test whose marker disagrees with its folder is an error."""

from __future__ import annotations

from pathlib import Path

import pytest

INTEGRATION_DIR = Path(__file__).parent / "integration"


@pytest.fixture(autouse=True)
def _own_user_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test, nor any process it starts, reads or writes the real user's data directory
    (platformdirs follows XDG_DATA_HOME; `fleet up` without --data-dir would use it)."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    misplaced = [
        item.nodeid for item in items
        if (INTEGRATION_DIR in item.path.parents) != (item.get_closest_marker("integration") is not None)
    ]
    if misplaced:
        raise pytest.UsageError(
            "tests in tests/integration/ must be marked integration (pytestmark = pytest.mark.integration) and "
            f"tests elsewhere must not: {', '.join(misplaced[:5])}"
        )
