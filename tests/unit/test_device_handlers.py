"""The device's task handlers and platform adapters: built-ins found through entry points,
registration checks, broken plugins skipped, and every locator an adapter uses listed in its
locator file.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from device.handlers.base import TaskContext, TaskHandler
from device.handlers.diagnostics import EchoHandler, PingHandler, SleepHandler
from device.handlers.registry import HandlerRegistry, load_registry
from schemas.tasks import EchoParams


def test_builtin_handlers_are_found_through_entry_points() -> None:
    registry = load_registry()
    assert {"ping", "echo", "sleep"} <= set(registry.types())
    assert isinstance(registry.get("ping"), PingHandler)
    assert isinstance(registry.get("echo"), EchoHandler)
    assert isinstance(registry.get("sleep"), SleepHandler)
    assert all(registry.get(name).safe_to_retry for name in ("ping", "echo", "sleep"))  # type: ignore[union-attr]
    assert registry.get("nope") is None


class _Shout(TaskHandler[EchoParams]):
    type = "shout"
    params_model = EchoParams

    async def run(self, ctx: TaskContext, params: EchoParams) -> dict[str, Any]:
        return {"message": params.message.upper()}


def test_register_validates_handlers() -> None:
    registry = HandlerRegistry()
    registry.register(_Shout)
    assert registry.types() == ["shout"]
    with pytest.raises(ValueError, match="already handled"):
        registry.register(_Shout)
    with pytest.raises(ValueError, match="cancel"):
        registry.register(type("C", (_Shout,), {"type": "cancel"}))
    with pytest.raises(ValueError, match="must match"):
        registry.register(type("B", (_Shout,), {"type": "Bad Type"}))
    with pytest.raises(TypeError):
        registry.register(object())  # type: ignore[arg-type]


def test_a_broken_plugin_is_logged_and_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    dist_info = tmp_path / "fleet_test_plugins-0.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: fleet-test-plugins\nVersion: 0.1\n")
    (dist_info / "entry_points.txt").write_text(
        "[fleet.test_handlers]\n"
        "missing = no_such_module_for_fleet_tests:Handler\n"
        "not_a_handler = json:dumps\n"
        "shout = tests.unit.test_device_handlers:_Shout\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = HandlerRegistry()
    registry.load_entry_points(group="fleet.test_handlers")
    assert registry.types() == ["shout"]
    skipped = [record.getMessage() for record in caplog.records if "skipped" in record.getMessage()]
    assert len(skipped) == 2 and any("missing" in line for line in skipped)


def test_every_locator_an_adapter_uses_is_in_its_locator_file() -> None:
    import inspect

    from device.platforms.registry import load_platforms

    platforms = load_platforms()
    assert {"reference", "douyin"} <= set(platforms)
    for name, adapter in platforms.items():
        source = inspect.getsource(inspect.getmodule(adapter))  # type: ignore[arg-type]
        locators = adapter().locators
        selectors = set(re.findall(r'(?:element|visible)\(page, "(\w+)"', source))
        selectors |= set(re.findall(r'css\("(\w+)"\)', source))
        selectors |= {n for group in re.findall(r"first_of\(page, \[([^\]]+)\]", source) for n in re.findall(r'"(\w+)"', group)}
        pages = set(re.findall(r'(?:open|at)\(page, "(\w+)"\)', source))
        assert selectors and pages, name
        assert selectors <= set(locators.selectors), f"{name}: {sorted(selectors - set(locators.selectors))}"
        assert pages <= set(locators.pages), f"{name}: {sorted(pages - set(locators.pages))}"
