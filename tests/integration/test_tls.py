"""Controller and device reach a broker over TLS (`mqtts://`), the embedded one or Mosquitto,
and verify its certificate."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.certificates import make_certificates
from tests.harness import Broker, Controller, Device, wait_for
from tests.ports import free_port, port_open

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("kind", ["amqtt", "mosquitto"])
def test_mqtts_with_the_ca_file_verifies_the_broker_and_works(kind: str, tmp_path: Path) -> None:
    tls = make_certificates(tmp_path)
    broker = Broker(kind, tmp_path, tls=tls)
    broker.start()
    controller = Controller(broker, tmp_path, mqtt_ca_file=str(tls.cafile))
    device = Device("pc-tls", broker, tmp_path, mqtt_ca_file=str(tls.cafile), keepalive="5")
    untrusting = Device("pc-untrusting", broker, tmp_path, keepalive="5")  # system CAs only
    try:
        controller.start()
        device.start()
        untrusting.start()
        controller.wait_device("pc-tls", "online")
        assert controller.wait_task(controller.create_task("pc-tls", "ping")["id"])["status"] == "succeeded"

        read_log = untrusting.process.log_path.read_text
        wait_for(lambda: "certificate is not trusted" in read_log(), 10, what="the untrusting device's refusal")
        assert "FLEET_MQTT_CA_FILE" in read_log()
        assert controller.device("pc-untrusting") is None
    finally:
        for process in (untrusting.process, device.process, controller.process, broker.process):
            process.kill()


def test_a_device_behind_an_https_only_proxy_connects_over_wss(tmp_path: Path) -> None:
    """The embedded broker's websocket listener with TLS: the device uses wss://, verifies the
    certificate, and works like any other; the controller stays on mqtts://."""
    tls = make_certificates(tmp_path)
    broker = Broker("amqtt", tmp_path, tls=tls)
    ws_port = free_port()
    broker.process.argv += ["--ws-port", str(ws_port)]
    broker.start()
    wait_for(lambda: port_open(ws_port), 15, what="the websocket listener")
    controller = Controller(broker, tmp_path, mqtt_ca_file=str(tls.cafile))
    device = Device("pc-wss", broker, tmp_path, mqtt_url=f"wss://127.0.0.1:{ws_port}/mqtt", mqtt_ca_file=str(tls.cafile),
                    keepalive="5")
    try:
        controller.start()
        device.start()
        online = controller.wait_device("pc-wss", "online")
        assert online["facts"]["hostname"]
        assert controller.wait_task(controller.create_task("pc-wss", "echo", params={"message": "via wss"})["id"])[
            "result"]["message"] == "via wss"
        assert f"wss://127.0.0.1:{ws_port}/mqtt" in device.process.log_path.read_text()
    finally:
        for process in (device.process, controller.process, broker.process):
            process.kill()
