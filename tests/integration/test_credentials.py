"""Controller and devices log in to a broker that requires a username and password
(Mosquitto with a password file), and the password never shows up in their logs."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import Broker, Controller, Device, missing_service, wait_for

pytestmark = pytest.mark.integration

PASSWORD = "s3cret-Pa55"


@pytest.fixture
def locked_broker(tmp_path: Path) -> Iterator[Broker]:
    tool = shutil.which("mosquitto_passwd")
    if tool is None:
        missing_service("mosquitto_passwd is not installed (Debian: apt-get install mosquitto)")
    password_file = tmp_path / "passwords"
    for user in ("controller", "pc-01"):
        create = [] if password_file.exists() else ["-c"]
        subprocess.run([tool, *create, "-b", str(password_file), user, PASSWORD], check=True, timeout=10)
    broker = Broker("mosquitto", tmp_path, password_file=password_file)
    broker.start()
    yield broker
    broker.kill()


def test_username_and_password_from_the_url_are_used_and_never_logged(locked_broker: Broker, tmp_path: Path) -> None:
    host = f"127.0.0.1:{locked_broker.port}"
    controller = Controller(locked_broker, tmp_path, mqtt_url=f"mqtt://controller:{PASSWORD}@{host}")
    device = Device("pc-01", locked_broker, tmp_path, mqtt_url=f"mqtt://pc-01:{PASSWORD}@{host}", keepalive="5")
    intruder = Device("pc-02", locked_broker, tmp_path, mqtt_url=f"mqtt://pc-02:wrong-{PASSWORD}@{host}", keepalive="5")
    try:
        controller.start()
        device.start()
        intruder.start()
        controller.wait_device("pc-01", "online")
        task = controller.wait_task(controller.create_task("pc-01", "ping")["id"])
        assert task["status"] == "succeeded"

        wait_for(lambda: "refused" in intruder.process.log_path.read_text(), 10, what="the intruder being refused")
        assert controller.device("pc-02") is None
    finally:
        for process in (intruder.process, device.process, controller.process):
            process.stop()
    for log in tmp_path.glob("*.log"):
        assert PASSWORD not in log.read_text(), f"password leaked into {log.name}"
