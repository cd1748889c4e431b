"""The daemon as a service, on real processes: `fleet device install-service --write-config
--no-register` writes the settings file and the systemd user unit (into a temporary
XDG_CONFIG_HOME), `systemd-analyze verify` accepts the unit, and the unit's own command line
(ExecStart, Environment, WorkingDirectory, read back from the file) runs under a real supervisor
that restarts it: supervisord with autorestart, as systemd's Restart=always would (systemd is
not the init of the test machine, so `systemctl --user` cannot run here). SIGKILL the daemon and
it comes back: a new process that publishes a new birth to a real Mosquitto, and logs to the
rotating file in its data dir."""

from __future__ import annotations

import importlib.util
import json
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from cli.service import systemd
from cli.service.common import ServiceRequest
from schemas.topics import device_status
from tests.harness import Broker, MqttProbe, Process, base_env, fleet_argv, missing_service, wait_for
from tests.integration.conftest import start_broker

pytestmark = pytest.mark.integration

DEVICE_ID = "svc-pc"
UNIT_NAME = "mqtt-fleet-device-test"


@dataclass
class Installed:
    work: Path
    unit: Path
    config: Path
    data_dir: Path
    output: str


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory, _module_processes: list[Process]) -> Broker:
    return start_broker("mosquitto", tmp_path_factory.mktemp("broker"), _module_processes)


@pytest.fixture(scope="module")
def installed(broker: Broker, tmp_path_factory: pytest.TempPathFactory) -> Installed:
    work = tmp_path_factory.mktemp("svc")
    config, data_dir = work / "etc" / "device.toml", work / "data"
    done = subprocess.run(
        fleet_argv("device", "install-service", "--write-config", "--config", str(config), "--mqtt-url", broker.url,
                   "--id", DEVICE_ID, "--data-dir", str(data_dir), "--name", UNIT_NAME, "--no-register"),
        capture_output=True, text=True, timeout=60, cwd=work, env=base_env() | {"XDG_CONFIG_HOME": str(work / "xdg")},
    )
    assert done.returncode == 0, done.stderr
    return Installed(work, work / "xdg" / "systemd" / "user" / f"{UNIT_NAME}.service", config, data_dir, done.stdout)


def service_section(unit: Path) -> dict[str, list[str]]:
    """The [Service] keys of a unit, each with its values in order (Environment= repeats)."""
    section, keys = "", {}  # type: ignore[var-annotated]
    for line in unit.read_text().splitlines():
        if line.startswith("[") and line.endswith("]"):
            section = line
        elif section == "[Service]" and "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            keys.setdefault(key, []).append(value)
    return keys


def test_the_unit_is_written_and_systemd_accepts_it(installed: Installed) -> None:
    assert installed.unit.is_file() and installed.config.is_file()
    assert "systemctl --user enable" in installed.output  # what to run to register it, printed
    keys = service_section(installed.unit)
    assert keys["Restart"] == ["always"] and keys["Environment"] == [f"FLEET_CONFIG={installed.config}"]
    if shutil.which("systemd-analyze") is None:
        missing_service("systemd-analyze is not installed (Debian: apt-get install systemd)")
    runtime = installed.work / "runtime"
    runtime.mkdir(exist_ok=True)
    verify = subprocess.run(
        ["systemd-analyze", "--user", "verify", str(installed.unit)], capture_output=True, text=True, timeout=30,
        env=base_env() | {"XDG_CONFIG_HOME": str(installed.work / "xdg"), "XDG_RUNTIME_DIR": str(runtime)},
    )
    assert verify.returncode == 0, verify.stderr
    assert installed.unit.name not in verify.stderr + verify.stdout, verify.stderr  # no warning about our unit

    # The --system variant of the same unit (written here, not to /etc), in system mode.
    system_unit = installed.work / "system" / f"{UNIT_NAME}.service"
    system_unit.parent.mkdir(exist_ok=True)
    system_unit.write_text(systemd.unit_text(ServiceRequest(UNIT_NAME, installed.config, "linux", system=True)))
    verify = subprocess.run(["systemd-analyze", "verify", str(system_unit)], capture_output=True, text=True, timeout=30)
    assert verify.returncode == 0 and system_unit.name not in verify.stderr + verify.stdout, verify.stderr


def supervisord_conf(installed: Installed) -> Path:
    """supervisord running the unit's ExecStart with its Environment and WorkingDirectory."""
    keys = service_section(installed.unit)
    argv = shlex.split(keys["ExecStart"][0])
    environment = dict(shlex.split(value)[0].split("=", 1) for value in keys["Environment"])
    directory = shlex.split(keys["WorkingDirectory"][0])[0]
    work = installed.work
    conf = work / "supervisord.conf"
    conf.write_text(
        "[supervisord]\n"
        f"logfile={work / 'supervisord.log'}\npidfile={work / 'supervisord.pid'}\nchildlogdir={work}\n"
        "nodaemon=true\n\n"
        f"[program:{UNIT_NAME}]\n"
        f"command={shlex.join(argv)}\n"
        f"environment={','.join(f'{key}={json.dumps(value)}' for key, value in environment.items())}\n"
        f"directory={directory}\n"
        "autostart=true\nautorestart=true\nstartsecs=0\nstartretries=100\nstopsignal=TERM\nstopwaitsecs=10\n"
        f"redirect_stderr=true\nstdout_logfile={work / 'daemon-stderr.log'}\n"
    )
    return conf


@pytest.fixture
def supervisor(installed: Installed, _processes: list[Process]) -> Iterator[Process]:
    if importlib.util.find_spec("supervisor") is None:
        missing_service("supervisor is not installed (pip install -e '.[test]')")
    conf = supervisord_conf(installed)
    process = Process("supervisord", [sys.executable, "-m", "supervisor.supervisord", "-n", "-c", str(conf)],
                      installed.work, env=base_env())
    # Their logs in a failure's report: supervisord's own, and the daemon's stderr (never started as a Process).
    _processes.extend([process, Process("daemon-stderr", [], installed.work)])
    process.start()
    yield process
    children = psutil.Process(process.popen.pid).children(recursive=True) if process.running else []  # type: ignore[union-attr]
    process.stop()  # SIGTERM: supervisord stops the daemon
    for child in children:
        if child.is_running():
            child.kill()


def daemon_pid(supervisor: Process) -> int | None:
    assert supervisor.running, supervisor.output()
    children = psutil.Process(supervisor.popen.pid).children()  # type: ignore[union-attr]
    return children[0].pid if len(children) == 1 else None


def births(probe: MqttProbe) -> list[str]:
    """Session ids of the online statuses seen, in order."""
    return [m["session_id"] for m in probe.json_messages(device_status(DEVICE_ID)) if m.get("state") == "online"]


def test_a_killed_daemon_is_restarted_by_its_supervisor(
    installed: Installed, broker: Broker, supervisor: Process
) -> None:
    probe = MqttProbe(broker, device_status(DEVICE_ID))
    try:
        first_pid = wait_for(lambda: daemon_pid(supervisor), 15, 0.05, "the daemon under supervisord")
        first = wait_for(lambda: births(probe), 30, 0.05, "the daemon's birth")[-1]
        psutil.Process(first_pid).kill()  # SIGKILL: a crash, no offline status of its own

        again = wait_for(lambda: [s for s in births(probe) if s.split("-")[0] != first.split("-")[0]], 30, 0.05,
                         "a birth of a new daemon process after the kill")
        second_pid = wait_for(lambda: daemon_pid(supervisor), 15, 0.05, "the restarted daemon")
    finally:
        probe.close()
    assert second_pid != first_pid and again
    log = installed.data_dir / "logs" / "device.log"
    starts = wait_for(lambda: log.is_file() and log.read_text().count(f"device {DEVICE_ID} starting") >= 2, 15, 0.05,
                      f"both daemon runs in {log}")
    assert starts
