"""Mistakes an operator (or a fuzzer with an admin token) could make, refused by a real
controller: revoking the controller's own broker login, account names no route can reach,
tokens that never expire; and one-time secrets in URLs kept out of real process logs."""

from __future__ import annotations

import subprocess
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from tests.harness import (
    Broker,
    Controller,
    Device,
    Process,
    base_env,
    fleet_argv,
    start_controller_on_embedded_broker,
    wait_for,
)
from tests.ports import free_port, port_open

pytestmark = pytest.mark.integration


def _fleet(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(fleet_argv(*args), env=env, cwd=cwd, capture_output=True, text=True, timeout=60)


def test_controller_login_cannot_be_revoked(tmp_path: Path, _processes: list[Process]) -> None:
    files = tmp_path / "broker-files"
    broker_settings = {"broker_password_file": str(files / "passwd"), "broker_acl_file": str(files / "acl")}
    env = base_env(database_url=f"sqlite:///{tmp_path / 'controller' / 'controller.db'}",
                   data_dir=str(tmp_path / "controller"), **broker_settings)
    made = _fleet(env, tmp_path, "identity", "add", "fleet-ctl", "--role", "controller")
    assert made.returncode == 0, made.stderr
    secret = made.stdout.split("shown once):", 1)[1].split()[0]
    broker = Broker("amqtt", tmp_path, password_file=files / "passwd", acl_file=files / "acl")
    _processes.append(broker.process)
    broker.start()
    controller = Controller(broker, tmp_path, mqtt_url=f"mqtt://fleet-ctl:{secret}@127.0.0.1:{broker.port}",
                            **broker_settings)
    _processes.append(controller.process)
    controller.start()
    assert controller.api.post("/api/v1/identities", json={"name": "ops2", "role": "controller"}).status_code == 201

    refused = controller.api.delete("/api/v1/identities/fleet-ctl")
    assert refused.status_code == 409, refused.text
    assert "the broker login this controller uses" in refused.json()["detail"]
    assert controller.api.get("/healthz").json()["mqtt_connected"] is True
    listed = {i["name"]: i for i in controller.api.get("/api/v1/identities").json()}
    assert listed["fleet-ctl"]["revoked_at"] is None
    assert controller.api.delete("/api/v1/identities/ops2").status_code == 200  # another login still can be


def test_account_names_with_a_slash_are_refused(tmp_path: Path, _processes: list[Process]) -> None:
    controller = start_controller_on_embedded_broker(tmp_path, _processes)
    device = Device("pc-01", controller.broker, tmp_path)
    _processes.append(device.process)
    device.start()
    controller.wait_device("pc-01", "online")
    api = controller.api
    for bad in ("team/alice", "..", "tab\there"):
        refused = api.post("/api/v1/accounts", json={"name": bad, "platform": "reference", "device_id": "pc-01"})
        assert refused.status_code == 422, (bad, refused.text)
        assert "except '/'" in refused.json()["detail"][0]["msg"]
    # Punctuation other than '/' is fine, and such an account can be read and deleted.
    for good in ("alice@example.com", "team:alice", "Alice Smith #2", "a?b%c"):
        made = api.post("/api/v1/accounts", json={"name": good, "platform": "reference", "device_id": "pc-01"})
        assert made.status_code == 201, (good, made.text)
        path = "/api/v1/accounts/" + quote(good, safe="")
        assert api.get(path).json()["name"] == good
        assert api.delete(path).status_code == 204
        assert api.get(path).status_code == 404


def test_token_create_expires_in_the_cli(tmp_path: Path) -> None:
    env = base_env(database_url=f"sqlite:///{tmp_path / 'c.db'}", data_dir=str(tmp_path / "data"))
    made = _fleet(env, tmp_path, "token", "create", "--name", "ci", "--scope", "read", "--expires", "30d")
    assert made.returncode == 0, made.stderr
    assert "expires 20" in made.stdout
    bad = _fleet(env, tmp_path, "token", "create", "--name", "ci", "--expires", "30 days")
    assert bad.returncode == 2
    assert "not a duration" in bad.stderr and "Traceback" not in bad.stderr


def test_one_time_url_secrets_stay_out_of_fleet_up_logs(tmp_path: Path, _processes: list[Process]) -> None:
    """`fleet up` at DEBUG logs every request (uvicorn's access lines) of the controller and the
    reference site in one process: the QR scan link's token and a file link's signature are
    blanked there."""
    api_port, broker_port, site_port = free_port(), free_port(), free_port()
    env = base_env(log_level="DEBUG", data_dir=str(tmp_path / "data"), broker_allow_anonymous="true")
    up = Process("fleet-up", fleet_argv("up", "--no-device", "--api-port", str(api_port), "--broker-port",
                                        str(broker_port), "--site-port", str(site_port)), tmp_path, env)
    _processes.append(up)
    up.start()
    wait_for(lambda: port_open(site_port) and port_open(api_port) or not up.running, 30, what="fleet up")
    assert up.running, up.log_tail()
    qr_token, signature = "qrTOKEN0123456789abc", "f" * 64
    scan = httpx.get(f"http://127.0.0.1:{site_port}/_phone/scan", params={"token": qr_token, "account": "alice"})
    link = httpx.get(f"http://127.0.0.1:{api_port}/api/v1/files/nope/download",
                     params={"expires": "99999999999", "signature": signature})
    assert scan.status_code in (200, 400, 404) and link.status_code in (403, 404)
    wait_for(lambda: up.log_path.read_text().count("<redacted>") >= 2, 10, what="both requests in the access log")
    text = up.log_path.read_text()
    assert qr_token not in text and signature not in text
    print(f"fleet up DEBUG log: {len(text)} chars, {text.count('<redacted>')} redacted values, no secret found")
