"""The self-contained `fleet-device` build (deploy/device-build, PyInstaller) on Linux: built
once per content of its sources (kept in tests/artifacts/device-build, so a re-run reuses it
and a fresh CI checkout builds once: 14-40 s here, by the load), then run with no Python in its environment against
a real Mosquitto and a real controller: it comes online with the task handlers its entry points
name, and runs tasks to `succeeded`. The Windows and macOS builds are not run here."""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
import subprocess
import sys
from importlib.metadata import distributions
from pathlib import Path

import psutil
import pytest

from tests.harness import Broker, Controller, Process, missing_service, wait_for
from tests.integration.conftest import start_broker

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the build smoke test runs on Linux"),
]

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ["cli", "device", "schemas", "config", "broker", "deploy/device-build", "pyproject.toml"]
# Not pytest's cache: it is off under `-p no:cacheprovider` and cleared by `--cache-clear`.
CACHE = ROOT / "tests" / "artifacts" / "device-build"
HANDLER_TYPES = {"ping", "echo", "sleep", "append", "login", "upload", "chat"}  # pyproject's fleet.task_handlers


def sources_hash() -> str:
    """What the build is made of: the sources it freezes and every installed package's version."""
    digest = hashlib.sha256(sys.version.encode())
    for name in SOURCES:
        path = ROOT / name
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
        for file in files:
            digest.update(str(file.relative_to(ROOT)).encode() + b"\0" + file.read_bytes())
    installed = sorted(f"{d.metadata['Name']}=={d.version}" for d in distributions())
    digest.update("\n".join(installed).encode())
    return digest.hexdigest()[:16]


@pytest.fixture(scope="module")
def program() -> Path:
    """The built `fleet-device`, from the cache when its sources have not changed."""
    if importlib.util.find_spec("PyInstaller") is None:
        missing_service("PyInstaller is not installed: pip install -e '.[build]'")
    spec = importlib.util.spec_from_file_location("device_build", ROOT / "deploy" / "device-build" / "build.py")
    assert spec is not None and spec.loader is not None
    device_build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(device_build)
    cache = CACHE
    cache.mkdir(parents=True, exist_ok=True)
    key = sources_hash()
    done = cache / key
    if not (done / "ok").is_file():
        for old in cache.iterdir():  # one build kept: each is about 230 MB
            shutil.rmtree(old, ignore_errors=True)
        building = cache / f"{key}.partial"
        device_build.build(building / "dist", building / "work", quiet=True)
        shutil.rmtree(building / "work")
        (building / "ok").touch()
        building.rename(done)
    return device_build.executable(done / "dist", onefile=False)


def clean_env(tmp: Path, **settings: str) -> dict[str, str]:
    """No Python anywhere: PATH is an empty folder (no python, no venv), no PYTHONPATH or
    VIRTUAL_ENV; only HOME and the FLEET_ settings given."""
    empty = tmp / "empty-path"
    empty.mkdir(exist_ok=True)
    return {"PATH": str(empty), "HOME": str(tmp), **{f"FLEET_{k.upper()}": v for k, v in settings.items()}}


def run(program: Path, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(program), *args], env=clean_env(tmp), cwd=tmp, capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def controller(tmp_path_factory: pytest.TempPathFactory, _module_processes: list[Process]) -> Controller:
    broker: Broker = start_broker("mosquitto", tmp_path_factory.mktemp("build-broker"), _module_processes)
    instance = Controller(broker, tmp_path_factory.mktemp("build-controller"), keepalive="5")
    _module_processes.append(instance.process)
    instance.start()
    return instance


def test_version_and_help_with_no_python(program: Path, tmp_path: Path) -> None:
    version = run(program, tmp_path, "--version")
    assert version.returncode == 0, version.stderr
    assert version.stdout.startswith("fleet-device (mqtt-fleet) ") and "unknown" not in version.stdout
    help_page = run(program, tmp_path, "--help")
    assert help_page.returncode == 0, help_page.stderr
    assert "revoke" in help_page.stdout and "--install-completion" not in help_page.stdout


def test_add_has_no_controller_and_says_so(program: Path, tmp_path: Path) -> None:
    result = run(program, tmp_path, "add", "pc-x")
    assert result.returncode == 2
    assert "no controller" in result.stderr and "Traceback" not in result.stderr


def test_bundles_playwright_driver(program: Path) -> None:
    driver = program.parent / "_internal" / "playwright" / "driver"
    assert (driver / "node").is_file() and (driver / "package" / "cli.js").is_file()


def test_frozen_daemon_comes_online_and_runs_tasks(
    program: Path, controller: Controller, tmp_path: Path, _module_processes: list[Process]
) -> None:
    config = tmp_path / "device.toml"  # the settings a user writes in fleet.toml
    config.write_text(f'mqtt_url = "{controller.broker.url}"\ndevice_id = "frozen-01"\n'
                      f'data_dir = "{(tmp_path / "data").as_posix()}"\n', encoding="utf-8")
    device = Process("device-frozen-01", [str(program)], tmp_path, clean_env(tmp_path, config=str(config)))
    _module_processes.append(device)
    device.start()
    seen = controller.wait_device("frozen-01", "online", timeout=30)
    assert set(seen["facts"]["task_types"]) >= HANDLER_TYPES  # entry points read from the bundled metadata
    ping = controller.create_task("frozen-01", "ping")
    echo = controller.create_task("frozen-01", "echo", params={"message": "frozen"})
    assert controller.wait_task(ping["id"])["status"] == "succeeded"
    done = controller.wait_task(echo["id"])
    assert done["status"] == "succeeded" and done["result"]["message"] == "frozen", done
    assert device.popen is not None
    outside = [m.path for m in psutil.Process(device.popen.pid).memory_maps()
               if ("python" in m.path or "site-packages" in m.path) and not m.path.startswith(str(program.parent))]
    assert not outside, f"the frozen daemon loaded Python from outside its build: {outside}"
    device.stop()
    assert wait_for(lambda: not device.running, 10, what="the daemon to stop on SIGTERM")
