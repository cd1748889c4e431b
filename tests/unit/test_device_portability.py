"""Every module of the device daemon (and the `config`, `schemas` and `broker.connection` code it
loads) imports on Windows and macOS: each is imported in a fresh interpreter that pretends to
be `win32` or `darwin` (`sys.platform`; `os.name` stays, or pathlib could not make a path
here), with the POSIX-only modules (fcntl, pwd, grp, termios, resource) made unimportable and
the POSIX-only calls (os.fork, os.getuid, signal.SIGHUP, …) removed. The standard library and
third-party packages are imported first, as they really are: only our own import-time code
runs under the pretence."""

from __future__ import annotations

import ast
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import device

ROOT = Path(__file__).resolve().parents[2]
OURS = ("device", "config", "schemas", "broker", "cli", "controller", "tests")
POSIX_MODULES = ["fcntl", "pwd", "grp", "termios", "resource", "posix"]
POSIX_ATTRIBUTES = {
    "os": ["fork", "getuid", "geteuid", "getgid", "setsid", "killpg", "getpgid", "setpgid", "WNOHANG", "uname"],
    "signal": ["SIGHUP", "SIGKILL", "SIGUSR1", "SIGUSR2", "SIGQUIT", "SIGCHLD", "SIGALRM", "alarm", "pause"],
}

SCRIPT = """
import importlib, json, os, signal, sys
modules, outside, platform, posix_modules, posix_attributes = json.loads(sys.argv[1])
for name in outside:
    try:
        importlib.import_module(name)
    except ImportError:
        pass  # an optional dependency (playwright) may be absent; the device imports it lazily
sys.platform = platform
for name in posix_modules if platform == "win32" else []:
    sys.modules[name] = None  # `import fcntl` now raises ImportError, as on Windows
for module, names in posix_attributes.items():
    for attribute in names if platform == "win32" else []:
        if hasattr(sys.modules[module], attribute):
            delattr(sys.modules[module], attribute)
failures = {}
for name in modules:
    try:
        importlib.import_module(name)
    except Exception as exc:
        failures[name] = f"{type(exc).__name__}: {exc}"
print(json.dumps(failures))
"""


def _device_modules() -> list[str]:
    return sorted(info.name for info in pkgutil.walk_packages(device.__path__, "device.")
                  if ".platforms.reference.site" not in info.name)  # the test site runs on the test machine only


def _outside_imports(modules: list[str]) -> list[str]:
    """The top-level packages our modules import that are not ours (stdlib and third-party)."""
    found: set[str] = set()
    for name in modules:
        path = ROOT / (name.replace(".", "/") + ".py")
        if not path.exists():
            path = ROOT / name.replace(".", "/") / "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module)
    return sorted(n for n in found if n.split(".")[0] not in OURS and n.split(".")[0] not in POSIX_MODULES)


@pytest.mark.parametrize("platform", ["win32", "darwin"])
def test_every_device_module_imports_on_windows_and_macos(platform: str) -> None:
    modules = _device_modules()
    assert "device.daemon" in modules and "device.transfer" in modules and len(modules) > 20
    argument = json.dumps([modules, _outside_imports(modules), platform, POSIX_MODULES, POSIX_ATTRIBUTES])
    run = subprocess.run([sys.executable, "-c", SCRIPT, argument], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    failures = json.loads(run.stdout.strip().splitlines()[-1])
    assert failures == {}, f"device modules that fail to import on {platform}: {failures}"


def test_the_pretence_catches_a_posix_only_import(tmp_path: Path) -> None:
    """The check above can fail: a module importing fcntl, or using os.getuid at import, does."""
    (tmp_path / "posixonly.py").write_text("import fcntl\n")
    (tmp_path / "uidonly.py").write_text("import os\nUID = os.getuid()\n")
    argument = json.dumps([["posixonly", "uidonly"], [], "win32", POSIX_MODULES, POSIX_ATTRIBUTES])
    run = subprocess.run([sys.executable, "-c", SCRIPT, argument], capture_output=True, text=True, timeout=60,
                         cwd=tmp_path, env={"PYTHONPATH": str(tmp_path)})
    failures = json.loads(run.stdout.strip().splitlines()[-1])
    assert set(failures) == {"posixonly", "uidonly"}, run.stdout + run.stderr
