"""The device daemon loads the browser stack (Playwright, `device.browser`, platform sessions, the
media downloader) and cryptography only when a task needs them: a daemon that starts and runs
an `echo` task has none of them in `sys.modules`, and `fleet device` starts it without the rest
of the CLI (typer, rich), which keeps its idle memory down (docs/architecture.md#device-memory).
Each check runs in a fresh interpreter."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from cli.entry import daemon_options
from tests.ports import free_port

HEAVY = ["playwright", "device.browser.session", "device.browser.locate", "device.transfer", "httpx", "cryptography"]

SCRIPT = """
import asyncio, json, sys
from config import FleetSettings
from device.daemon import DeviceDaemon
from device.journal import TaskState

async def main() -> None:
    settings = FleetSettings(data_dir=sys.argv[1], device_id="pc-imports", mqtt_url=sys.argv[2])
    daemon = DeviceDaemon(settings)
    stop = asyncio.Event()
    running = asyncio.create_task(daemon.run(stop))
    while not hasattr(daemon, "_journal"):
        await asyncio.sleep(0.01)
    envelope = {"id": "t-echo", "type": "echo", "params": {"message": "hi"}, "created_at": "2030-01-01T00:00:00Z"}
    daemon._route("devices/pc-imports/tasks", json.dumps(envelope).encode(), False)
    for _ in range(1000):
        entry = daemon._journal.get("t-echo")
        if entry is not None and entry.state == TaskState.FINAL:
            break
        await asyncio.sleep(0.01)
    idle = {name: name in sys.modules for name in json.loads(sys.argv[3])}
    browser = daemon._executor._browser()  # what the first browser task does
    stop.set()
    await running
    print(json.dumps({"final": entry is not None and entry.state == TaskState.FINAL, "idle": idle,
                      "browser_loaded": "device.browser.session" in sys.modules, "has_browser": browser is not None}))

asyncio.run(main())
"""


def test_a_daemon_running_an_echo_task_never_imports_the_browser_stack(tmp_path: Path) -> None:
    unreachable = f"mqtt://127.0.0.1:{free_port()}"  # nothing listens: the daemon keeps retrying
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path), unreachable, json.dumps(HEAVY)],
        capture_output=True, text=True, timeout=60, cwd=Path(__file__).parents[2],
    )
    assert done.returncode == 0, done.stderr[-2000:]
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    assert outcome["final"], "the echo task did not finish"
    assert not any(outcome["idle"].values()), f"loaded without a browser task: {outcome['idle']}"
    # The check can see a loaded module: asking for the browser environment loads it.
    assert outcome["browser_loaded"] and outcome["has_browser"]


ENTRY_SCRIPT = """
import json, sys
import device.daemon

def started(settings):  # instead of running the daemon: what `fleet device` loaded to get here
    print(json.dumps({"cli": [name for name in ("typer", "rich", "click", "cli.main") if name in sys.modules],
                      "id": settings.device_id, "name": settings.device_name}))

device.daemon.run_device = started
sys.argv = ["fleet", *sys.argv[1:]]
from cli.entry import main
main()
"""


def test_fleet_device_starts_the_daemon_without_the_rest_of_the_cli(tmp_path: Path) -> None:
    def fleet(*argv: str) -> dict[str, Any]:
        done = subprocess.run([sys.executable, "-c", ENTRY_SCRIPT, *argv], capture_output=True, text=True, timeout=60,
                              cwd=tmp_path, env={"PYTHONPATH": str(Path(__file__).parents[2]), "FLEET_DATA_DIR": str(tmp_path)})
        assert done.returncode == 0, done.stderr[-2000:]
        return dict(json.loads(done.stdout.strip().splitlines()[-1]))

    assert fleet("device", "--id", "pc-entry", "--name", "Lab PC") == {"cli": [], "id": "pc-entry", "name": "Lab PC"}
    # Anything but the daemon's own options goes to the typer app, which runs the daemon just the same.
    typer_app = fleet("device", "--name=Lab PC", "--id", "pc-entry", "--")
    assert (typer_app["id"], typer_app["name"]) == ("pc-entry", "Lab PC")
    assert {"typer", "cli.main"} <= set(typer_app["cli"])


@pytest.mark.parametrize(("argv", "options"), [
    (["device"], {"device_id": None, "name": None, "config": None}),
    (["device", "--id=pc-1", "--name", "Lab"], {"device_id": "pc-1", "name": "Lab", "config": None}),
    (["device", "--config", "/etc/fleet/device.toml"], {"device_id": None, "name": None, "config": "/etc/fleet/device.toml"}),
    (["device", "install-service", "--dry-run"], None),
    (["device", "add", "pc-1"], None),
    (["device", "--help"], None),
    (["device", "--id"], None),
    (["device", "--i", "pc-1"], None),
    (["devices"], None),
    ([], None),
])
def test_only_the_daemons_own_options_take_the_short_path(argv: list[str], options: dict[str, str] | None) -> None:
    assert daemon_options(argv) == options
