"""Remote update on real processes (docs/architecture.md#remote-update): a Mosquitto broker, a
controller holding the release public key, and one device started through the launcher
(`fleet device --managed`), running the installed version 0.1.0.

Two real wheels of this project are built once for the module (`pip wheel` of a copy of the
source with the version bumped): 0.2.0, and 0.3.0 whose daemon crashes on start. The device
updates to 0.2.0 (its birth and the task's result say so); packages that are wrongly signed or
whose bytes changed after signing are refused while 0.2.0 keeps running; 0.3.0 is rolled back
to 0.2.0 and the reason (its last stderr line) is reported.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from schemas.releases import release_message
from schemas.signing import public_key_text
from tests.harness import Broker, Controller, Process, base_env, fleet_argv, wait_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("pyproject.toml", "README.md", "broker", "cli", "config", "controller", "device", "schemas")
DEVICE = "upd-1"
CRASH = "version 0.3.0 is broken on purpose"


def build_wheel(version: str, out: Path, crash: bool = False) -> Path:
    """A real wheel of this project at `version` (and, with `crash`, a daemon that dies on start)."""
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        for name in SOURCES:
            source = ROOT / name
            if source.is_dir():
                shutil.copytree(source, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                src.mkdir(exist_ok=True)
                shutil.copy(source, src / name)
        project = src / "pyproject.toml"
        text = project.read_text(encoding="utf-8")
        project.write_text(text.replace('version = "0.1.0"', f'version = "{version}"', 1), encoding="utf-8")
        if crash:
            with (src / "device" / "daemon.py").open("a", encoding="utf-8") as file:
                file.write(f"\nraise RuntimeError({CRASH!r})\n")
        # Offline and without an isolated build environment: the test extra's setuptools builds it.
        subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                        "-w", str(out), str(src)],
                       check=True, capture_output=True, timeout=120)
    return out / f"mqtt_fleet-{version}-py3-none-any.whl"


@dataclass
class Fleet:
    controller: Controller
    device: Process
    key: Ed25519PrivateKey
    wheels: dict[str, Path]
    work: Path

    def cli(self, *args: str) -> str:
        """`fleet ARGS` as the operator runs it, against this controller."""
        env = base_env(api_url=f"http://127.0.0.1:{self.controller.port}", api_token=self.controller.admin_token)
        env["COLUMNS"] = "250"
        done = subprocess.run(fleet_argv(*args), env=env, capture_output=True, text=True, timeout=60, cwd=self.work)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    def sign(self, version: str, sha256: str, file_name: str) -> str:
        return self.key.sign(release_message(version, sha256, file_name)).hex()

    def publish(self, version: str) -> dict[str, Any]:
        import hashlib

        wheel = self.wheels[version]
        signature = self.sign(version, hashlib.sha256(wheel.read_bytes()).hexdigest(), wheel.name)
        response = self.controller.api.post(
            "/api/v1/releases", params={"version": version, "file_name": wheel.name, "signature": signature},
            content=wheel.read_bytes(), headers={"content-type": "application/octet-stream"},
        )
        assert response.status_code == 201, response.text
        release: dict[str, Any] = response.json()
        return release

    def start_rollout(self, version: str) -> str:
        """Roll `version` out to the device; the id of its `update` run."""
        response = self.controller.api.post(f"/api/v1/releases/{version}/rollout",
                                            json={"target": {"device_ids": [DEVICE]}})
        assert response.status_code == 201, response.text
        return f"{response.json()['id']}:{DEVICE}"

    def version(self) -> str:
        device = self.controller.device(DEVICE)
        assert device is not None
        return str((device.get("facts") or {}).get("version"))


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    work = tmp_path_factory.mktemp("update")
    with ThreadPoolExecutor(2) as pool:  # the two wheels build while the fleet starts
        builds = {"0.2.0": pool.submit(build_wheel, "0.2.0", work / "wheels"),
                  "0.3.0": pool.submit(build_wheel, "0.3.0", work / "wheels", True)}
        keygen = subprocess.run(fleet_argv("release", "keygen", "--out", str(work / "release.key")), env=base_env(),
                                capture_output=True, text=True, timeout=60)
        assert keygen.returncode == 0, keygen.stderr
        key = load_pem_private_key((work / "release.key").read_bytes(), password=None)
        assert isinstance(key, Ed25519PrivateKey)
        public = (work / "release.pub").read_text().strip()
        assert f"FLEET_UPDATE_PUBLIC_KEY={public}" in keygen.stdout and public == public_key_text(key.public_key())
        processes: list[Process] = []
        with contextlib.ExitStack() as stack:
            stack.callback(lambda: [process.kill() for process in processes])
            broker = Broker("mosquitto", work)
            processes.append(broker.process)
            broker.start()
            controller = Controller(broker, work, job_interval="0.25", update_public_key=public)
            processes.append(controller.process)
            controller.start()
            env = base_env(data_dir=str(work / "device"), device_id=DEVICE, mqtt_url=broker.url, update_public_key=public,
                           update_healthy_after="1", update_start_timeout="30",
                           public_api_url=f"http://127.0.0.1:{controller.port}")
            device = Process("device-launcher", fleet_argv("device", "--managed"), work, env)
            processes.append(device)
            stack.callback(device.stop)  # first (SIGTERM): the launcher stops its daemon, then exits
            device.start()
            controller.wait_device(DEVICE, "online", timeout=30)
            wheels = {version: build.result(timeout=120) for version, build in builds.items()}
            yield Fleet(controller, device, key, wheels, work)


def test_a_release_signed_with_another_key_is_refused_by_the_controller(fleet: Fleet) -> None:
    wheel = fleet.wheels["0.2.0"]
    other = Ed25519PrivateKey.generate().sign(release_message("0.2.0", "0" * 64, wheel.name)).hex()
    response = fleet.controller.api.post(
        "/api/v1/releases", params={"version": "0.2.0", "file_name": wheel.name, "signature": other},
        content=wheel.read_bytes(), headers={"content-type": "application/octet-stream"},
    )
    assert response.status_code == 422, response.text
    assert "signature" in response.json()["detail"]
    assert fleet.controller.api.get("/api/v1/releases").json() == []


def test_the_device_updates_and_reports_its_new_version(fleet: Fleet) -> None:
    """Also the drain: a running task finishes first, one waiting for a slot is handed back and
    runs again on the new version."""
    controller = fleet.controller
    assert fleet.version() == "0.1.0"
    published = fleet.cli("release", "publish", str(fleet.wheels["0.2.0"]), "--key", str(fleet.work / "release.key"))
    assert "release 0.2.0 published" in published
    assert "0.2.0" in fleet.cli("release", "list")
    running = controller.create_task(DEVICE, "sleep", params={"seconds": 2, "steps": 2})
    controller.wait_task(running["id"], {"running"})
    update_id = fleet.start_rollout("0.2.0")
    controller.wait_task(update_id, {"running"})  # both slots (FLEET_MAX_CONCURRENCY 2) taken now
    waiting = controller.create_task(DEVICE, "echo", params={"message": "handed back"}, retry_backoff=0)
    update = controller.wait_task(update_id, timeout=60)
    assert update["status"] == "succeeded", update
    assert update["result"] == {"from": "0.1.0", "to": "0.2.0", "changed": True}
    wait_for(lambda: fleet.version() == "0.2.0", 20, what="the device's birth reporting 0.2.0")
    assert controller.wait_task(running["id"])["status"] == "succeeded"
    handed_back = controller.wait_task(waiting["id"], {"succeeded"}, timeout=30)
    assert handed_back["attempt"] == 2, handed_back
    assert fleet.device.running


def _hand_update(fleet: Fleet, **changes: Any) -> dict[str, Any]:
    """An `update` task sent by hand with the 0.3.0 release's params, changed."""
    params = fleet.controller.api.get("/api/v1/releases/0.3.0").json()["params"]
    task = fleet.controller.create_task(DEVICE, "update", params={**params, **changes})
    return fleet.controller.wait_task(task["id"], timeout=30)


def test_a_wrongly_signed_or_corrupted_package_is_refused(fleet: Fleet) -> None:
    release = fleet.publish("0.3.0")
    forged = Ed25519PrivateKey.generate().sign(release_message("0.3.0", release["sha256"], release["file_name"])).hex()
    wrong_key = _hand_update(fleet, signature=forged)
    tampered_version = _hand_update(fleet, version="0.3.1")  # signed for 0.3.0
    other_bytes = "1" * 64  # a sha256 the operator signed, which the served bytes do not have
    corrupted = _hand_update(fleet, sha256=other_bytes, signature=fleet.sign("0.3.0", other_bytes, release["file_name"]))
    for task in (wrong_key, tampered_version, corrupted):
        assert task["status"] == "failed" and task["error"]["code"] == "package_invalid", task
    assert "sha256" in corrupted["error"]["message"]
    assert fleet.controller.device(DEVICE)["status"] == "online"  # type: ignore[index]
    assert fleet.version() == "0.2.0"
    echo = fleet.controller.create_task(DEVICE, "echo", params={"message": "still here"})
    assert fleet.controller.wait_task(echo["id"])["status"] == "succeeded"


def test_a_version_that_crashes_on_start_is_rolled_back(fleet: Fleet) -> None:
    job = json.loads(fleet.cli("release", "rollout", "0.3.0", "--device", DEVICE, "--json"))
    assert job["type"] == "update" and job["params"]["version"] == "0.3.0"
    task = fleet.controller.wait_task(f"{job['id']}:{DEVICE}", timeout=60)
    assert task["status"] == "failed", task
    assert task["error"]["code"] == "update_failed"
    assert CRASH in task["error"]["message"]
    assert task["result"] == {"from": "0.2.0", "to": "0.3.0", "running": "0.2.0"}
    fleet.controller.wait_device(DEVICE, "online", timeout=30)
    assert fleet.version() == "0.2.0"
    echo = fleet.controller.create_task(DEVICE, "echo", params={"message": "after the rollback"})
    assert fleet.controller.wait_task(echo["id"])["status"] == "succeeded"


def test_the_daemon_stops_when_its_launcher_is_killed(fleet: Fleet) -> None:
    """A service manager that kills only the launcher (-9) leaves no daemon running on alone."""
    import psutil

    assert fleet.device.popen is not None
    daemons = psutil.Process(fleet.device.popen.pid).children()
    assert len(daemons) == 1
    fleet.device.kill()
    _gone, alive = psutil.wait_procs(daemons, timeout=20)
    assert not alive, "the daemon outlived its launcher"
    fleet.controller.wait_device(DEVICE, "offline", timeout=15)
