"""The amqtt version the embedded broker's overrides were written for, and the check that it is
the one installed.

`broker.fleet_broker`, `broker.fleet_subscriptions` and `broker.protocol` replace or rely on
private amqtt methods. A different amqtt may have renamed or rewritten them, so the broker
refuses to start on any other version (`check_amqtt_version`), and
tests/integration/broker_conformance/test_embedded_broker.py compares a fingerprint of each amqtt method the
overrides replace or call (`AMQTT_FINGERPRINTS`) with the installed source, so an upgrade says
exactly which override to re-read. To upgrade amqtt: change the pin here and in pyproject.toml,
re-read each method listed by `fingerprint_drift()`, then update its fingerprint.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
from importlib.metadata import PackageNotFoundError, version

from schemas.errors import BrokerError

PINNED_AMQTT_VERSION = "0.12.1"

# "module.Class.method" → first 16 hex digits of sha256(inspect.getsource(method)) in amqtt 0.12.1.
AMQTT_FINGERPRINTS: dict[str, str] = {
    "amqtt.broker.Broker.__init__": "5158ff3ca6493baf",
    "amqtt.broker.Broker._initialize_client_session": "5dd89158bbe46266",
    "amqtt.broker.Broker._session_monitor": "5091fa20cdfdc203",
    "amqtt.broker.Broker._handle_message_delivery": "89727723da550bed",
    "amqtt.broker.Broker._run_broadcast": "e852128b3e38e04a",
    "amqtt.broker.Broker._publish_session_retained_messages": "78cd66096c935c1f",
    "amqtt.broker.Broker.add_subscription": "07757b63113c395e",
    "amqtt.broker.Broker._del_subscription": "415f349273b0552d",
    "amqtt.broker.Broker._del_all_subscriptions": "615579810f47d1e0",
    "amqtt.broker.Broker._handle_subscription": "3dae18afa195209e",
    "amqtt.broker.Broker._handle_client_session": "8b1b52a03df9daf5",
    "amqtt.broker.Broker._retain_broadcast_message": "884c193d6731d048",
    "amqtt.broker.Broker._broadcast_message": "78ad4edb7efb3b72",
    "amqtt.broker.Broker._get_handler": "169908c149fded36",
    "amqtt.broker.Broker._topic_filtering": "9259ae5e1dd3e20d",
    "amqtt.broker.Broker.retain_message": "6233eff2618baede",
    "amqtt.broker.Broker._handle_disconnect": "8c3b8702f3567055",
    "amqtt.broker.Broker._delete_session": "a8333dded50648a7",
    "amqtt.broker.Broker._authenticate": "4d7db8cc6fe2c3f6",
    "amqtt.broker.Broker._client_message_loop": "916c4647c3389918",
    "amqtt.broker.Broker._stop_handler": "496013328caf21d0",
    "amqtt.mqtt.protocol.broker_handler.BrokerProtocolHandler.init_from_connect": "036dc04c1133a18f",
    "amqtt.mqtt.protocol.broker_handler.BrokerProtocolHandler.mqtt_connack_authorize": "4e64256ea1f5c73c",
    "amqtt.mqtt.protocol.broker_handler.BrokerProtocolHandler.handle_disconnect": "63b454d06eab58f8",
    "amqtt.mqtt.protocol.handler.ProtocolHandler.attach": "ff8ecc04c80a9feb",
    "amqtt.adapters.BufferReader.read": "4322b19ae09cc9c9",
    "amqtt.mqtt.connack.ConnackPacket.build": "311228331b5c4e18",
    "amqtt.mqtt.packet.MQTTFixedHeader.from_stream": "3fc24bcecb654652",
    "amqtt.mqtt.protocol.broker_handler.BrokerProtocolHandler.handle_read_timeout": "ffd79f12457f41e1",
    "amqtt.mqtt.protocol.broker_handler.BrokerProtocolHandler.handle_connection_closed": "e9c448557a8dab58",
    "amqtt.mqtt.protocol.broker_handler.BrokerProtocolHandler.stop": "70e440da78e7178b",
    "amqtt.mqtt.protocol.handler.ProtocolHandler._handle_qos1_message_flow": "944e6a8130c70daf",
    "amqtt.mqtt.protocol.handler.ProtocolHandler._reader_loop": "93f3b8e4483040d0",
    "amqtt.mqtt.protocol.handler.ProtocolHandler._retry_deliveries": "16fd2ca86991aba9",
    "amqtt.mqtt.protocol.handler.ProtocolHandler._handle_qos2_message_flow": "f2d96f1fc4eca34f",
    "amqtt.mqtt.protocol.handler.ProtocolHandler._handle_message_flow": "610dae5c5d7f3b8d",
    "amqtt.mqtt.protocol.handler.ProtocolHandler.handle_pubrel": "653391af438fb4d7",
    "amqtt.mqtt.protocol.handler.ProtocolHandler.start": "684c58c16be73a2d",
    "amqtt.mqtt.pubrel.PubrelPacket.build": "2b30bbc9a426bf6f",
    "amqtt.mqtt.pubcomp.PubcompPacket.build": "799c0022a97a8cc3",
    "amqtt.mqtt.protocol.handler.ProtocolHandler._stop_waiters": "78a59ebc21c3e9fa",
    "amqtt.mqtt.protocol.handler.ProtocolHandler._send_packet": "9f0ae4e325319652",
    "amqtt.mqtt.protocol.handler.ProtocolHandler.mqtt_publish": "30cb8f651cc521c5",
}


class AmqttVersionError(BrokerError, RuntimeError):
    """The installed amqtt is not the version the embedded broker's overrides were written for."""


def installed_amqtt_version() -> str | None:
    try:
        return version("amqtt")
    except PackageNotFoundError:
        return None


def check_amqtt_version() -> None:
    """Raise AmqttVersionError unless amqtt PINNED_AMQTT_VERSION is installed."""
    installed = installed_amqtt_version()
    if installed != PINNED_AMQTT_VERSION:
        raise AmqttVersionError(
            f"the embedded MQTT broker needs amqtt=={PINNED_AMQTT_VERSION}, found "
            f"{installed or 'no amqtt'}: its conformance fixes override private amqtt methods "
            f"(broker/fleet_broker.py, broker/protocol.py) written for that version. Install it with "
            f"pip install 'amqtt=={PINNED_AMQTT_VERSION}', or use another broker (FLEET_MQTT_URL, --no-broker)."
        )


def fingerprint(qualified_name: str) -> str:
    """sha256 prefix of the installed source of "module.Class.method"."""
    module_name, class_name, method_name = qualified_name.rsplit(".", 2)
    method = getattr(getattr(importlib.import_module(module_name), class_name), method_name)
    return hashlib.sha256(inspect.getsource(method).encode()).hexdigest()[:16]


def fingerprint_drift() -> list[str]:
    """The amqtt methods whose installed source differs from the one the overrides were written for."""
    drift = []
    for name, expected in AMQTT_FINGERPRINTS.items():
        try:
            actual = fingerprint(name)
        except (AttributeError, ImportError, OSError, TypeError):
            actual = "missing"
        if actual != expected:
            drift.append(f"{name} (expected {expected}, found {actual})")
    return drift
