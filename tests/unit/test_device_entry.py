"""`fleet-device` (cli/device_entry.py), the frozen build's program: its arguments, where it
finds its config file, and that the daemon and its plug-ins import nothing the build leaves out
(deploy/device-build/fleet-device.spec's EXCLUDES); the build itself: tests/integration/test_device_build.py."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from importlib.metadata import distribution
from pathlib import Path

import pytest

from cli.device_entry import config_beside_program, main

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "deploy" / "device-build" / "fleet-device.spec"


def spec_excludes() -> list[str]:
    for node in ast.parse(SPEC.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "EXCLUDES" for t in node.targets):
            return list(ast.literal_eval(node.value))
    raise AssertionError("no EXCLUDES in the spec")


@pytest.mark.parametrize("argv", [["--version"], ["device", "--version"], ["-V"]])
def test_version(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    main(argv)
    assert capsys.readouterr().out.startswith("fleet-device (mqtt-fleet) ")


def test_config_beside_a_frozen_program(tmp_path: Path) -> None:
    program, cwd = tmp_path / "app" / "fleet-device.exe", tmp_path / "cwd"
    program.parent.mkdir()
    cwd.mkdir()
    environ: dict[str, str] = {}
    assert config_beside_program(environ, True, program, cwd) is None  # none there: nothing set
    (program.parent / "fleet.toml").write_text("", encoding="utf-8")
    assert config_beside_program(environ, False, program, cwd) is None  # `fleet`, not frozen
    assert config_beside_program({"FLEET_CONFIG": "x.toml"}, True, program, cwd) is None
    (cwd / "fleet.toml").write_text("", encoding="utf-8")
    assert config_beside_program(environ, True, program, cwd) is None  # the working dir's wins
    (cwd / "fleet.toml").unlink()
    assert config_beside_program(environ, True, program, cwd) == program.parent / "fleet.toml"
    assert environ == {"FLEET_CONFIG": str(program.parent / "fleet.toml")}


def test_daemon_and_plugins_import_nothing_the_build_leaves_out() -> None:
    """A fresh interpreter imports what the frozen program runs (its entry, the daemon, the
    device commands, every plug-in its entry points name); none of it may need an excluded module."""
    plugins = sorted({p.module for p in distribution("mqtt-fleet").entry_points
                      if p.group in ("fleet.task_handlers", "fleet.platforms")})
    code = ("import importlib, json, sys\n"
            f"for name in {['cli.device_entry', 'device.daemon', 'cli.devices', *plugins]!r}:\n"
            "    importlib.import_module(name)\n"
            "print(json.dumps(sorted(sys.modules)))")
    loaded = json.loads(subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True,
                                       capture_output=True, text=True, timeout=30).stdout)
    excluded = spec_excludes()
    wrong = [m for m in loaded if any(m == e or m.startswith(e + ".") for e in excluded)]
    assert not wrong, f"the device build leaves these out, but the daemon imports them: {wrong}"
