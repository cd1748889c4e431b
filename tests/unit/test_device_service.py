"""`fleet device install-service` / `uninstall-service`: the systemd unit, launchd plist and
Task Scheduler XML each run the one daemon command line with the config file and restart it;
a dry run changes nothing; uninstalling what is not there is fine; bad input is exit status 2
with a message, never a traceback; a failing registration command says what to run by hand."""

from __future__ import annotations

import os
import plistlib
import stat
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import pytest

from cli.service import actions, common, launchd, systemd, windows_task
from cli.service.common import DaemonCommand, RegistrationError, ServiceRequest, daemon_command
from tests.cli_runner import fleet_command

TASK = f"{{{windows_task.TASK_NAMESPACE}}}"
Run = Callable[..., tuple[int, str]]


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A home of the test's own: every file an install writes lands under it."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "home" / ".config"))
    monkeypatch.setenv("COLUMNS", "200")
    for name in [key for key in os.environ if key.startswith("FLEET_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path / "home"


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "etc dir" / "device.toml"
    path.parent.mkdir()
    path.write_text('mqtt_url = "mqtt://127.0.0.1:1883"\ndevice_id = "pc-01"\n')
    return path


@pytest.fixture
def run(home: Path, capsys: pytest.CaptureFixture[str]) -> Run:
    """`fleet ARGS` in process; (exit status, stdout + stderr)."""

    def fleet(*args: str) -> tuple[int, str]:
        with pytest.raises(SystemExit) as ended:
            fleet_command().main(args=list(args), prog_name="fleet")
        captured = capsys.readouterr()
        return ended.value.code or 0, captured.out + captured.err  # type: ignore[return-value]

    return fleet


def files_under(root: Path) -> set[Path]:
    return {path for path in root.rglob("*") if path.is_file()} if root.exists() else set()


def test_the_systemd_unit_runs_the_daemon_command_with_its_config_and_restarts_it(home: Path, config: Path) -> None:
    plan = systemd.plan(ServiceRequest("mqtt-fleet-device", config, "linux"))
    [unit] = plan.files
    assert unit.path == home / ".config" / "systemd" / "user" / "mqtt-fleet-device.service"
    lines = unit.text.splitlines()
    assert f"ExecStart={sys.executable} -m cli device --managed" in lines
    assert f'Environment="FLEET_CONFIG={config}"' in lines  # quoted: the path has a space
    assert f'WorkingDirectory="{config.parent}"' in lines
    assert {"Restart=always", "RestartSec=5", "RestartPreventExitStatus=2", "StartLimitIntervalSec=300",
            "StartLimitBurst=10", "WantedBy=default.target"} <= set(lines)
    assert plan.register == [["systemctl", "--user", "daemon-reload"],
                             ["systemctl", "--user", "enable", "mqtt-fleet-device.service"],
                             ["systemctl", "--user", "restart", "mqtt-fleet-device.service"]]


def test_a_system_unit_goes_to_etc_and_starts_at_boot(config: Path) -> None:
    plan = systemd.plan(ServiceRequest("fleet-2", config, "linux", system=True))
    assert plan.files[0].path == Path("/etc/systemd/system/fleet-2.service")
    assert "WantedBy=multi-user.target" in plan.files[0].text and "After=network-online.target" in plan.files[0].text
    assert plan.register[1] == ["systemctl", "enable", "fleet-2.service"]


def test_systemd_quoting_keeps_specifiers_and_variables_literal() -> None:
    assert systemd.quote("/opt/fleet/bin/python") == "/opt/fleet/bin/python"
    assert systemd.quote("/a b/100%/$HOME") == '"/a b/100%%/$$HOME"'
    assert systemd.quote('say "hi"') == '"say \\"hi\\""'


def test_the_launchd_agent_keeps_the_daemon_alive(home: Path, config: Path) -> None:
    plan = launchd.plan(ServiceRequest("mqtt-fleet-device", config, "macos"))
    [agent_file] = plan.files
    assert agent_file.path == home / "Library" / "LaunchAgents" / "mqtt-fleet-device.plist"
    agent = plistlib.loads(agent_file.data)
    assert agent["Label"] == "mqtt-fleet-device"
    assert agent["ProgramArguments"] == [sys.executable, "-m", "cli", "device", "--managed"]
    assert agent["EnvironmentVariables"] == {"FLEET_CONFIG": str(config)}
    assert agent["KeepAlive"] is True and agent["RunAtLoad"] is True and agent["ThrottleInterval"] == 10
    assert agent["StandardErrorPath"] == str(home / "Library" / "Logs" / "mqtt-fleet-device.log")
    assert plan.register == [["launchctl", "bootstrap", f"gui/{os.getuid()}", str(agent_file.path)]]
    assert plan.stop == [["launchctl", "bootout", f"gui/{os.getuid()}/mqtt-fleet-device"]]


def test_the_windows_task_starts_at_log_on_restarts_and_never_times_out(config: Path) -> None:
    plan = windows_task.plan(ServiceRequest("mqtt-fleet-device", config, "windows"))
    [task_file] = plan.files
    assert task_file.data[:2] == b"\xff\xfe"  # UTF-16 with its byte order mark, as schtasks reads it
    task = ET.fromstring(task_file.data.decode("utf-16").split("\n", 1)[1])  # (ET refuses the encoding line of a str)
    assert task.find(f"{TASK}Triggers/{TASK}LogonTrigger/{TASK}Enabled").text == "true"  # type: ignore[union-attr]
    settings = task.find(f"{TASK}Settings")
    assert settings is not None
    assert settings.findtext(f"{TASK}ExecutionTimeLimit") == "PT0S"
    assert settings.findtext(f"{TASK}RestartOnFailure/{TASK}Count") == "999"
    assert settings.findtext(f"{TASK}RestartOnFailure/{TASK}Interval") == "PT1M"
    action = task.find(f"{TASK}Actions/{TASK}Exec")
    assert action is not None and action.findtext(f"{TASK}Command") == sys.executable
    assert action.findtext(f"{TASK}Arguments") == f'-m cli device --managed --config "{config}"'
    assert action.findtext(f"{TASK}WorkingDirectory") == str(config.parent)
    assert plan.register[0] == ["schtasks", "/Create", "/TN", "mqtt-fleet-device", "/XML", str(task_file.path), "/F"]


def test_the_windows_task_runs_the_windowless_interpreter() -> None:
    assert windows_task.windowless(r"C:\Fleet\.venv\Scripts\python.exe") == r"C:\Fleet\.venv\Scripts\pythonw.exe"
    assert windows_task.windowless(r"C:\Fleet\fleet-launcher.exe") == r"C:\Fleet\fleet-launcher.exe"


def test_every_service_runs_the_one_daemon_command(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert daemon_command(config) == DaemonCommand([sys.executable, "-m", "cli", "device", "--managed"], {"FLEET_CONFIG": str(config)})
    monkeypatch.setattr(common, "daemon_command",
                        lambda path: DaemonCommand(["/opt/launcher", "run"], {"FLEET_CONFIG": str(path)}))
    for planner, platform in [(systemd.plan, "linux"), (launchd.plan, "macos"), (windows_task.plan, "windows")]:
        text = planner(ServiceRequest("x", config, platform)).files[0].text
        assert "/opt/launcher" in text and "cli device" not in text, platform


def test_a_dry_run_prints_the_files_and_commands_and_changes_nothing(home: Path, config: Path, run: Run) -> None:
    before = files_under(home.parent)
    status, output = run("device", "install-service", "--config", str(config), "--dry-run")
    assert status == 0, output
    assert "# would write" in output and "ExecStart=" in output and "systemctl --user enable mqtt-fleet-device.service" in output
    status, output = run("device", "install-service", "--config", str(config), "--dry-run", "--platform", "windows")
    assert status == 0 and "<ExecutionTimeLimit>PT0S</ExecutionTimeLimit>" in output and "schtasks /Create" in output
    status, output = run("device", "install-service", "--config", str(config), "--dry-run", "--platform", "macos")
    assert status == 0 and "<key>KeepAlive</key>" in output and "launchctl bootstrap" in output
    status, output = run("device", "uninstall-service", "--dry-run")
    assert status == 0 and "systemctl --user disable --now mqtt-fleet-device.service" in output
    assert files_under(home.parent) == before


def test_write_config_creates_an_owner_only_file_and_never_shows_the_password(home: Path, tmp_path: Path, run: Run) -> None:
    target = tmp_path / "new" / "device.toml"
    args = ["device", "install-service", "--config", str(target), "--write-config", "--mqtt-url",
            "mqtt://pc-01:hunter22@broker:1883", "--id", "pc-01", "-g", "lab"]
    status, output = run(*args, "--dry-run")
    assert status == 0 and "hunter22" not in output and 'mqtt_url = "mqtt://pc-01:<redacted>@broker:1883"' in output
    assert not target.exists()
    status, output = run(*args, "--no-register")
    assert status == 0, output
    assert 'groups = ["lab"]' in target.read_text() and "hunter22" in target.read_text() and "hunter22" not in output
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert (home / ".config" / "systemd" / "user" / "mqtt-fleet-device.service").is_file()
    status, output = run(*args, "--no-register")
    assert status == 2 and "exists already" in output


@pytest.mark.parametrize(("args", "message"), [
    (["--config", "{tmp}/missing.toml"], "does not exist; create it with"),
    (["--config", "{tmp}"], "is a directory"),
    (["--config", "{tmp}/bad.toml"], "FLEET_MAX_CONCURRENCY"),
    (["--config", "{tmp}/etc dir/device.toml", "--platform", "windows"], "can only be shown (--dry-run)"),
    (["--config", "{tmp}/etc dir/device.toml", "--platform", "bsd", "--dry-run"], "use one of linux, macos, windows"),
    (["--config", "{tmp}/etc dir/device.toml", "--system", "--platform", "macos", "--dry-run"], "--system is for Linux"),
    (["--config", "{tmp}/etc dir/device.toml", "--name", "../evil"], "--name '../evil'"),
    (["--config", "{tmp}/etc dir/device.toml", "--mqtt-url", "mqtt://x"], "go with --write-config"),
    (["--config", "{tmp}/new.toml", "--write-config", "--id", "pc-02"], "--write-config needs --mqtt-url"),
    (["--config", "{tmp}/new.toml", "--write-config", "--mqtt-url", "http://x", "--dry-run"], "FLEET_MQTT_URL"),
])
def test_bad_input_is_exit_status_2_with_a_message(
    args: list[str], message: str, config: Path, tmp_path: Path, run: Run
) -> None:
    (tmp_path / "bad.toml").write_text("max_concurrency = 0\n")
    status, output = run("device", "install-service", *[arg.replace("{tmp}", str(tmp_path)) for arg in args])
    assert status == 2 and message in output and "Traceback" not in output, output


def test_uninstalling_what_is_not_installed_is_fine(run: Run) -> None:
    status, output = run("device", "uninstall-service", "--name", "never-installed")
    assert status == 0 and "not installed" in output


class Recorder:
    """Stands in for systemctl & co.: records each command, fails those it is told to."""

    def __init__(self, failing: str = "") -> None:
        self.commands: list[list[str]] = []
        self.failing = failing

    def __call__(self, argv: list[str]) -> actions.Outcome:
        self.commands.append(argv)
        failed = bool(self.failing) and self.failing in argv
        return actions.Outcome(1 if failed else 0, "Failed to connect to bus" if failed else "")


def test_install_and_uninstall_run_the_commands_in_order(home: Path, config: Path) -> None:
    plan = systemd.plan(ServiceRequest("mqtt-fleet-device", config, "linux"))
    said: list[str] = []
    recorder = Recorder()
    actions.install(plan, "linux", said.append, run=recorder)
    assert recorder.commands == plan.register and plan.files[0].path.is_file()
    assert any("enable-linger" in line for line in said)
    recorder.commands.clear()
    actions.uninstall(plan, "linux", said.append, run=Recorder(failing="disable"))  # stopping may fail: going on
    assert not plan.files[0].path.exists() and said[-1] == "uninstalled systemd user unit"


def test_a_failing_registration_says_what_to_run_by_hand(home: Path, config: Path) -> None:
    plan = systemd.plan(ServiceRequest("mqtt-fleet-device", config, "linux"))
    with pytest.raises(RegistrationError) as failed:
        actions.install(plan, "linux", lambda line: None, run=Recorder(failing="enable"))
    message = str(failed.value)
    assert "`systemctl --user enable mqtt-fleet-device.service` failed (exit status 1): Failed to connect to bus" in message
    assert "run by hand:\n  systemctl --user enable mqtt-fleet-device.service\n  systemctl --user restart" in message
    assert failed.value.exit_code == 1 and plan.files[0].path.is_file()


def test_a_missing_tool_is_an_outcome_not_a_crash() -> None:
    outcome = actions.run_command(["no-such-tool-for-fleet-tests", "--version"])
    assert not outcome.ok and "not installed or not on PATH" in outcome.output


def test_fleet_device_config_reads_that_file(config: Path, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`fleet device --config FILE` (the Windows task's way, having no environment) is FLEET_CONFIG=FILE."""
    import device.daemon
    from cli.entry import run_daemon
    from config import FleetSettings

    started: list[FleetSettings] = []
    monkeypatch.setattr(device.daemon, "run_device", started.append)
    monkeypatch.setenv("FLEET_CONFIG", str(home / "not-this.toml"))  # restored afterwards
    run_daemon(None, None, str(config))
    assert [settings.device_id for settings in started] == ["pc-01"]
    assert str(started[0].mqtt_url) == "mqtt://127.0.0.1:1883"
