"""Signed tasks end to end (Ed25519, issue 12): a controller with signing on creates its key,
devices that trust its public key run its tasks and refuse an operator's unsigned or altered
hand-written task, one signed with `fleet task sign` runs only on the topic it was signed for;
key rotation; and a configuration of the retired HMAC scheme is refused with one line."""

from __future__ import annotations

import json
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from schemas.signing import Signer, public_key_text
from schemas.tasks import TaskEnvelope
from tests.harness import (
    Broker,
    Controller,
    Device,
    MqttProbe,
    Process,
    base_env,
    fleet_argv,
)

pytestmark = pytest.mark.integration


def cli(tmp_path: Path, controller: Controller, *args: str) -> subprocess.CompletedProcess[str]:
    env = base_env(api_url=f"http://127.0.0.1:{controller.port}", api_token=controller.admin_token,
                   data_dir=str(tmp_path / "cli"))
    return subprocess.run(fleet_argv(*args), env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)


def test_devices_with_a_public_key_run_signed_tasks_only(tmp_path: Path, _processes: list[Process]) -> None:
    broker = Broker("amqtt", tmp_path)
    _processes.append(broker.process)
    broker.start()
    controller = Controller(broker, tmp_path, task_signing="true")
    _processes.append(controller.process)
    controller.start()
    key_file = controller.data_dir / "task-signing-key.pem"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    printed = cli(tmp_path, controller, "task", "signing-key")
    assert printed.returncode == 0, printed.stderr
    public = printed.stdout.split("FLEET_TASK_SIGNING_PUBLIC_KEYS='")[1].split("'")[0]
    device = Device("pc-signed", broker, tmp_path, task_signing_public_keys=json.loads(public), keepalive="5")
    _processes.append(device.process)
    device.start()
    controller.wait_device("pc-signed", "online")

    assert controller.wait_task(controller.create_task("pc-signed", "echo", params={"message": "signed"})["id"])[
        "status"] == "succeeded"

    probe = MqttProbe(broker, "devices/pc-signed/results")
    try:
        probe.publish("devices/pc-signed/tasks", json.dumps({"id": "by-hand", "type": "append"}))
        refused = controller.wait_task("by-hand")
        assert refused["status"] == "rejected" and refused["error"]["code"] == "unsigned"
        assert device.executions("by-hand") == 0

        signed = cli(tmp_path, controller, "task", "sign", '{"id": "by-hand-signed", "type": "echo"}', "--device", "pc-signed")
        assert signed.returncode == 0, signed.stderr
        assert json.loads(signed.stdout)["target"] == "devices/pc-signed/tasks"
        probe.publish("devices/pc-signed/tasks", signed.stdout.strip())
        assert controller.wait_task("by-hand-signed")["status"] == "succeeded"
        tampered = json.loads(signed.stdout)
        tampered.update(id="by-hand-tampered")
        probe.publish("devices/pc-signed/tasks", json.dumps(tampered))
        assert controller.wait_task("by-hand-tampered")["error"]["code"] == "invalid_signature"

        for_device = cli(tmp_path, controller, "task", "sign", '{"id": "meant-for-one", "type": "append"}', "--device", "pc-signed")
        probe.publish("fleet/broadcast/tasks", for_device.stdout.strip())  # signed for one device, sent to all
        assert controller.wait_task("meant-for-one:pc-signed")["error"]["code"] == "wrong_target"
        assert device.executions("meant-for-one:pc-signed") == 0
        broadcast = cli(tmp_path, controller, "task", "sign", '{"id": "for-all", "type": "echo"}', "--broadcast")
        probe.publish("fleet/broadcast/tasks", broadcast.stdout.strip())
        assert controller.wait_task("for-all:pc-signed")["status"] == "succeeded"
    finally:
        probe.close()
    nothing = cli(tmp_path, controller, "task", "sign", '{"type": "ping"}')
    assert nothing.returncode != 0 and "--device" in nothing.stderr
    logs = "".join(p.log_path.read_text() for p in _processes if p.log_path.exists())
    assert "PRIVATE KEY" not in logs and key_file.read_text().splitlines()[1] not in logs


def _key_file(path: Path) -> Signer:
    private = Ed25519PrivateKey.generate()
    path.write_bytes(private.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    return Signer(private)


def test_key_rotation(tmp_path: Path, _processes: list[Process]) -> None:
    old, new = _key_file(tmp_path / "old.pem"), _key_file(tmp_path / "new.pem")
    keys = {"old": public_key_text(old.public_key), "new": public_key_text(new.public_key)}
    broker = Broker("amqtt", tmp_path)
    _processes.append(broker.process)
    broker.start()
    controller = Controller(broker, tmp_path, task_signing_private_key_file=str(tmp_path / "old.pem"))
    _processes.append(controller.process)
    controller.start()
    device = Device("pc-rot", broker, tmp_path, task_signing_public_keys=[keys["old"]], keepalive="5")
    _processes.append(device.process)
    device.start()
    controller.wait_device("pc-rot", "online")
    assert controller.wait_task(controller.create_task("pc-rot", "ping")["id"])["status"] == "succeeded"
    topic = "devices/pc-rot/tasks"

    def restart_device(*trusted: str) -> None:
        device.kill()
        controller.wait_device("pc-rot", "offline")
        device.process.env["FLEET_TASK_SIGNING_PUBLIC_KEYS"] = json.dumps([keys[k] for k in trusted])
        device.start()
        controller.wait_device("pc-rot", "online")

    # 1. the devices trust both keys; 2. the controller switches to the new one.
    restart_device("old", "new")
    controller.process.kill()
    controller.process.env["FLEET_TASK_SIGNING_PRIVATE_KEY_FILE"] = str(tmp_path / "new.pem")
    controller.start()
    assert controller.api.get("/api/v1/signatures/key").json()["key_id"] == new.key_id
    assert controller.wait_task(controller.create_task("pc-rot", "echo", params={"message": "new key"})["id"])[
        "status"] == "succeeded"
    probe = MqttProbe(broker, "devices/pc-rot/results")
    try:
        probe.publish(topic, old.sign(_envelope("old-while-both"), topic).model_dump_json(exclude_none=True))
        assert controller.wait_task("old-while-both")["status"] == "succeeded"
        # 3. the old key is removed from the devices.
        restart_device("new")
        probe.publish(topic, old.sign(_envelope("old-after-removal"), topic).model_dump_json(exclude_none=True))
        refused = controller.wait_task("old-after-removal")
        assert refused["error"]["code"] == "unknown_signing_key" and old.key_id in refused["error"]["message"]
        assert device.executions("old-after-removal") == 0
        stranger = Signer(Ed25519PrivateKey.generate())
        probe.publish(topic, stranger.sign(_envelope("unknown-key"), topic).model_dump_json(exclude_none=True))
        assert controller.wait_task("unknown-key")["error"]["code"] == "unknown_signing_key"
        assert device.executions("unknown-key") == 0
        assert controller.wait_task(controller.create_task("pc-rot", "ping")["id"])["status"] == "succeeded"
    finally:
        probe.close()


def _envelope(task_id: str) -> TaskEnvelope:
    return TaskEnvelope(id=task_id, type="append", params={"line": task_id})


@pytest.mark.parametrize("command", [["controller"], ["device", "--id", "pc-x"], ["devices"]])
def test_the_retired_hmac_key_is_refused_with_one_line(command: list[str], tmp_path: Path) -> None:
    env = base_env(task_signing_key="shared-signing-key-0123456789", data_dir=str(tmp_path))
    result = subprocess.run(fleet_argv(*command), env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr and "shared-signing-key" not in result.stderr
    assert "FLEET_TASK_SIGNING_KEY" in result.stderr and "FLEET_TASK_SIGNING_PUBLIC_KEYS" in result.stderr
