"""The first hour with `fleet`, as real processes: a CLI in another terminal finds a `fleet up`
started on other ports, `--wait` shows progress, and start-up problems (a taken port, a bad
database URL) are one error line and exit 2, never a banner or a traceback."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path

import pytest

from tests.harness import Process, base_env, fleet_argv, wait_for
from tests.ports import free_port

pytestmark = pytest.mark.integration


def run_fleet(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(fleet_argv(*args), env=env, cwd=cwd, capture_output=True, text=True, timeout=60)


def test_cli_finds_fleet_up_on_other_ports_with_only_the_data_dir(tmp_path: Path) -> None:
    data = tmp_path / "data"
    api_port, broker_port = free_port(), free_port()
    argv = fleet_argv("up", "--api-port", str(api_port), "--broker-port", str(broker_port),
                      "--site-port", str(free_port()), "--data-dir", str(data))
    up = Process("fleet-up", argv, tmp_path, base_env(device_id="local-pc"))
    up.start()
    cli_env = base_env(data_dir=str(data))  # no API URL, port or token: found through the data dir
    try:
        wait_for(lambda: "fleet is up" in up.log_path.read_text() or not up.running, 30, 0.1, "the fleet up banner")
        assert up.running, up.log_tail()
        runtime = json.loads((data / "runtime.json").read_text())
        assert runtime["api_url"] == f"http://127.0.0.1:{api_port}" and runtime["device_id"] == "local-pc"
        assert "password" not in json.dumps(runtime) and "@" not in runtime["mqtt_url"]
        banner = up.log_path.read_text()
        assert f"FLEET_DATA_DIR={data} fleet task send local-pc ping --wait" in banner  # runnable as printed
        shell = run_fleet("env", env=cli_env, cwd=tmp_path)
        assert shell.stdout.split() == [f"API=http://127.0.0.1:{api_port}", "MQTT_HOST=127.0.0.1",
                                        f"MQTT_PORT={broker_port}", "DEVICE=local-pc", f"SITE={runtime['site_url']}"]

        def local_device_online() -> bool:
            listed = run_fleet("devices", "--status", "online", "--ids", env=cli_env, cwd=tmp_path)
            assert listed.returncode == 0, listed.stderr
            return listed.stdout.split() == ["local-pc"]

        wait_for(local_device_online, 30, 0.2, "the local device listed online by `fleet devices`")
        sent = run_fleet("task", "send", "local-pc", "sleep", "-p", "seconds=1", "-p", "steps=4", "--wait",
                         env=cli_env, cwd=tmp_path)
        assert sent.returncode == 0, sent.stderr
        task_id = sent.stdout.split(":")[0]
        live = [line for line in sent.stdout.splitlines() if line.startswith(f"{task_id}: ")]
        assert f"{task_id}: progress 50% step 2/4" in live and f"{task_id}: succeeded" in live, sent.stdout
        assert live.index(f"{task_id}: progress 50% step 2/4") < live.index(f"{task_id}: succeeded")
        clip = tmp_path / "clip.bin"
        clip.write_bytes(os.urandom(3 * 1024 * 1024))
        uploaded = run_fleet("file", "upload", str(clip), env=cli_env, cwd=tmp_path)
        assert uploaded.returncode == 0, uploaded.stderr
        steps = [line for line in uploaded.stdout.splitlines() if line.startswith("uploading clip.bin: ")]
        assert [line.rsplit("(", 1)[1] for line in steps] == [f"{p}%)" for p in range(10, 101, 10)], uploaded.stdout
        assert json.loads(uploaded.stdout[uploaded.stdout.index("{"):])["size"] == 3 * 1024 * 1024
        assert "GET /api/v1" not in up.log_path.read_text()  # the CLI's polling is not logged at INFO
    finally:
        up.stop()
    assert not (data / "runtime.json").exists()
    gone = run_fleet("devices", env=cli_env, cwd=tmp_path)
    assert gone.returncode == 1 and "cannot reach the controller" in gone.stderr
    assert run_fleet("env", env=cli_env, cwd=tmp_path).returncode == 1


def test_taken_api_port_is_one_error_and_no_banner(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        result = run_fleet("up", "--api-port", str(taken), "--broker-port", str(free_port()),
                           "--site-port", str(free_port()), env=base_env(data_dir=str(tmp_path)), cwd=tmp_path)
    assert result.returncode == 2
    assert "fleet is up" not in result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"port {taken} is already in use" in errors[0] and "--api-port" in errors[0]
    assert "Traceback" not in result.stderr and not (tmp_path / "runtime.json").exists()


def test_taken_site_port_is_refused_not_someone_elses_site(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        result = run_fleet("up", "--site-port", str(taken), "--api-port", str(free_port()), "--broker-port",
                           str(free_port()), env=base_env(data_dir=str(tmp_path)), cwd=tmp_path)
    assert result.returncode == 2 and "fleet is up" not in result.stdout
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert f"port {taken}" in result.stderr and "--site-port" in result.stderr and "--no-site" in result.stderr


@pytest.mark.parametrize("command", [
    ("up", "--api-port", "PORT", "--broker-port", "PORT", "--no-site"),
    ("controller", "--api-port", "PORT"),
    ("token", "create", "--name", "ci"),
])
def test_bad_database_url_is_one_line_naming_the_setting(tmp_path: Path, command: tuple[str, ...]) -> None:
    for url, expected in [("not-a-url", "not a SQLAlchemy database URL"),
                          ("postgresql+pg8000://fleet:hunter2@127.0.0.1/fleet", "pip install pg8000")]:
        env = base_env(database_url=url, data_dir=str(tmp_path))
        result = run_fleet(*(str(free_port()) if arg == "PORT" else arg for arg in command), env=env, cwd=tmp_path)
        assert result.returncode == 2, result.stdout + result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith("error:") and "FLEET_DATABASE_URL" in lines[0] and expected in lines[0]
        assert "hunter2" not in result.stderr and "fleet is up" not in result.stdout
