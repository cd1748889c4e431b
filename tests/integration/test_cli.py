"""The `fleet` command as a user runs it: `fleet up` end to end, clear start-up errors."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.harness import Broker, Process, base_env, fleet_argv, wait_for
from tests.logins import RawClient
from tests.ports import free_port

pytestmark = pytest.mark.integration


def run_fleet(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(fleet_argv(*args), env=env, cwd=cwd, capture_output=True, text=True, timeout=60)


def test_fleet_up_runs_broker_controller_and_device(tmp_path: Path) -> None:
    broker_port, api_port = free_port(), free_port()
    env = base_env(device_id="local-pc", api_port=str(api_port), data_dir=str(tmp_path))
    argv = fleet_argv("up", "--broker-port", str(broker_port), "--site-port", str(free_port()))
    up = Process("fleet-up", argv, tmp_path, env)
    up.start()
    try:
        api = httpx.Client(base_url=f"http://127.0.0.1:{api_port}", timeout=5)

        def local_device_online() -> bool:
            assert up.running, up.log_tail()
            token = tmp_path / "api-token"
            if token.exists():
                api.headers["Authorization"] = f"Bearer {token.read_text()}"
            try:
                return api.get("/api/v1/devices/local-pc").json().get("status") == "online"
            except (httpx.HTTPError, ValueError):
                return False

        wait_for(local_device_online, 30, 0.1, "fleet up: local device online")
        assert httpx.get(f"http://127.0.0.1:{api_port}/api/v1/devices").status_code == 401  # no token, no entry
        sent = run_fleet("task", "send", "local-pc", "echo", "-p", "message=hi", "--wait", env=env, cwd=tmp_path)
        assert sent.returncode == 0, sent.stderr
        assert "succeeded" in sent.stdout and "hi" in sent.stdout
        listed = run_fleet("devices", env=env, cwd=tmp_path)
        assert "local-pc" in listed.stdout and "online" in listed.stdout
        assert (tmp_path / "controller.db").exists() and (tmp_path / "journal-local-pc.sqlite3").exists()

        created = run_fleet("token", "create", "--name", "dashboard", "--scope", "read", env=env, cwd=tmp_path)
        assert created.returncode == 0, created.stderr
        reader = created.stdout.split()[created.stdout.split().index("dashboard:") + 1]
        as_reader = {"Authorization": f"Bearer {reader}"}
        assert httpx.get(f"http://127.0.0.1:{api_port}/api/v1/tasks", headers=as_reader).status_code == 200
        refused = httpx.post(f"http://127.0.0.1:{api_port}/api/v1/tasks", headers=as_reader,
                             json={"device_id": "local-pc", "type": "ping"})
        assert refused.status_code == 403 and "'operate'" in refused.json()["detail"]
        listed = run_fleet("token", "list", env=env, cwd=tmp_path)
        assert "dashboard" in listed.stdout and reader not in listed.stdout
        token_id = reader.split("_")[1]
        assert run_fleet("token", "revoke", token_id, env=env, cwd=tmp_path).returncode == 0
        assert httpx.get(f"http://127.0.0.1:{api_port}/api/v1/tasks", headers=as_reader).status_code == 401
        assert reader not in up.log_path.read_text()  # secrets stay out of the logs

        # Secure by default: the embedded broker admits only the provisioned controller and device.
        stranger = RawClient(broker_port, "", "")
        assert stranger.connected.wait(10) and stranger.refused is not None
        stranger.close()
        credentials = (tmp_path / "local-credentials.json").read_text()
        assert not any(secret in up.log_path.read_text() for secret in json.loads(credentials).values())
    finally:
        up.stop()


def test_taken_broker_port_stops_with_a_clear_message(tmp_path: Path) -> None:
    taken = Broker("amqtt", tmp_path)
    taken.start()
    try:
        result = run_fleet("broker", "--port", str(taken.port), env=base_env(), cwd=tmp_path)
        assert result.returncode == 2
        assert f"{taken.port} is already in use" in result.stderr and "--broker-port" in result.stderr
        up = run_fleet("up", "--broker-port", str(taken.port), env=base_env(api_port=str(free_port())), cwd=tmp_path)
        assert up.returncode == 2 and "already in use" in up.stderr
    finally:
        taken.kill()


def test_broker_without_logins_or_lab_switch_refuses_to_start(tmp_path: Path) -> None:
    result = run_fleet("broker", "--port", str(free_port()), env=base_env(), cwd=tmp_path)
    assert result.returncode == 2
    assert "FLEET_BROKER_PASSWORD_FILE" in result.stderr and "FLEET_BROKER_ALLOW_ANONYMOUS" in result.stderr


def test_bad_setting_stops_start_up_naming_it(tmp_path: Path) -> None:
    result = run_fleet("controller", env=base_env(api_port="eighty", log_level="loud"), cwd=tmp_path)
    assert result.returncode == 2
    assert "FLEET_API_PORT" in result.stderr and "FLEET_LOG_LEVEL" in result.stderr and "'INFO'" in result.stderr
    assert "Traceback" not in result.stderr

    secret_url = base_env(mqtt_url="http://user:hunter2@host")
    result = run_fleet("device", env=secret_url, cwd=tmp_path)
    assert result.returncode == 2 and "FLEET_MQTT_URL" in result.stderr and "hunter2" not in result.stderr


def test_config_file_and_dotenv_are_read(tmp_path: Path) -> None:
    (tmp_path / "fleet.toml").write_text('api_port = 9999\nmax_concurrency = 5\n')
    (tmp_path / ".env").write_text("FLEET_MAX_CONCURRENCY=7\n")
    code = "from config import load_settings; s = load_settings(); print(s.api_port, s.max_concurrency)"
    result = subprocess.run(
        [fleet_argv()[0], "-c", code], env=base_env(), cwd=tmp_path, capture_output=True, text=True, timeout=30
    )
    assert result.stdout.split() == ["9999", "7"], result.stderr

    (tmp_path / "fleet.toml").write_text("api_port = [not toml\n")
    result = run_fleet("controller", env=base_env(), cwd=tmp_path)
    assert result.returncode == 2 and "invalid configuration" in result.stderr
