"""The two tiers: `tests/unit/` runs in-process in seconds (`pytest -m "not integration"`);
`tests/integration/` starts real brokers, controllers, devices, browsers and databases and
marks every test `integration`. A test whose marker disagrees with its folder is an error.

`tests/run.sh` runs the suite in two passes: every test not marked `serial` on two pytest-xdist
workers (`--serial=exclude`, whole modules per worker, the slowest first), then the `serial`
ones alone (`--serial=only`): those that assert how soon something happens on the wall clock."""

from __future__ import annotations

from pathlib import Path

import pytest

INTEGRATION_DIR = Path(__file__).parent / "integration"
# The modules that take longest (rough seconds, a busy 2-core machine), handed out first under
# xdist so that the two workers finish together; the rest follow in collection order, unit tier last.
SLOWEST_FIRST: dict[str, int] = {
    "integration/test_e2e.py": 200, "integration/test_lifecycle.py": 190, "integration/test_chaos.py": 140,
    "integration/test_multi_controller.py": 120, "integration/test_browser.py": 100,
    "integration/test_idempotent_controllers.py": 90, "integration/test_nats_cluster.py": 80,
    "integration/test_openapi_fuzz.py": 70, "integration/test_delivery.py": 70, "integration/test_cli_first_hour.py": 60,
}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--serial", choices=("include", "exclude", "only"), default="include",
        help="tests marked serial: run them with the rest (include), leave them out (exclude: the parallel "
             "pass of tests/run.sh) or run only them (only: its serial pass)",
    )


@pytest.fixture(autouse=True)
def _own_user_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test, nor any process it starts, reads or writes the real user's data directory
    (platformdirs follows XDG_DATA_HOME; `fleet up` without --data-dir would use it)."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    misplaced = [
        item.nodeid for item in items
        if (INTEGRATION_DIR in item.path.parents) != (item.get_closest_marker("integration") is not None)
    ]
    if misplaced:
        raise pytest.UsageError(
            "tests in tests/integration/ must be marked integration (pytestmark = pytest.mark.integration) and "
            f"tests elsewhere must not: {', '.join(misplaced[:5])}"
        )
    _select_pass(config, items)
    if hasattr(config, "workerinput"):  # an xdist worker: the order it reports is the order modules are handed out
        items.sort(key=_slowness)  # stable: the others keep their order


def _slowness(item: pytest.Item) -> int:
    tests_dir = Path(__file__).parent
    name = item.path.relative_to(tests_dir).as_posix() if item.path.is_relative_to(tests_dir) else ""
    return -SLOWEST_FIRST.get(name, 0)


def _select_pass(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Keep only the tests of this pass (`--serial`), reporting the others as deselected."""
    serial = config.getoption("serial")
    if serial == "include":
        return
    keep: list[pytest.Item] = []
    drop: list[pytest.Item] = []
    for item in items:
        (keep if (item.get_closest_marker("serial") is not None) == (serial == "only") else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
