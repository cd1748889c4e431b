"""Logins and topic ACLs on the brokers with the fleet's password and ACL files (nats-server: its
authorization file, written from the same rules): a wrong
password changing nothing, a SUBSCRIBE the ACL denies, and (embedded broker) an identity's
client id reserved for its own login.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import Broker, wait_for
from tests.integration.broker_conformance.mqtt_kit import RawClient, Will, running
from tests.nats_broker import NatsBroker

pytestmark = pytest.mark.integration


LOGINS = {"pc-9": ("device", "device-secret-9"), "ctl": ("controller", "controller-secret")}


def locked(kind: str, work: Path) -> Broker:
    """A broker that admits only the logins of `LOGINS`, with the fleet's topic ACLs (nats:
    nats-server with the authorization file written from the same rules)."""
    from broker.credentials import Identity, acl_file, bcrypt_hash, hash_password, password_file
    from broker.nats_auth import nats_authorization

    identities = [Identity(name, role, hash_password(secret), nats_password_hash=bcrypt_hash(secret))
                  for name, (role, secret) in LOGINS.items()]
    if kind == "nats":
        (work / "nats-auth.conf").write_text(nats_authorization(identities)[0])
        return NatsBroker(work, work / "nats-auth.conf", work / "nats.pid")
    (work / "passwords").write_text(password_file(identities))
    (work / "acl").write_text(acl_file(identities))
    return Broker(kind, work, password_file=work / "passwords", acl_file=work / "acl")


@pytest.fixture(scope="module", params=["amqtt", "mosquitto", "nats"])
def locked_broker(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    with running(locked(request.param, tmp_path_factory.mktemp(f"locked-{request.param}"))) as started:
        yield started


def test_a_refused_login_cannot_take_over_a_connected_client(locked_broker: Broker) -> None:
    """A CONNECT with a connected device's client id but a wrong password is refused and changes
    nothing: the device stays connected, keeps its subscription and no will is published.
    amqtt 0.12.1 dropped a clean session's subscriptions, or took a persistent session over,
    before it checked the password."""
    port, device_login = locked_broker.port, ("pc-9", LOGINS["pc-9"][1])
    controller = RawClient(port, "ctl", login=("ctl", LOGINS["ctl"][1]))
    controller.subscribe(("devices/#", 1))
    device = RawClient(port, "pc-9", login=device_login, will=Will("devices/pc-9/status", b"offline", retain=False))
    assert device.subscribe(("devices/pc-9/tasks", 1)) == [1]
    for clean in (True, False):
        code = RawClient.refused(port, "pc-9", ("pc-9", "wrong password"), clean=clean)
        assert code in (4, 5), f"{locked_broker.kind} answered a wrong password with return code {code}"
    controller.publish("devices/pc-9/tasks", b"still yours")
    assert device.next_message().payload == b"still yours", f"{locked_broker.kind}: the device lost its subscription"
    seen = controller.messages_until("devices/pc-9/tasks")
    assert [m.topic for m in seen] == ["devices/pc-9/tasks"], f"{locked_broker.kind} published the device's will"
    assert not device.closed_by_broker(0.5)
    for client in (device, controller):
        client.disconnect()


def test_a_subscribe_the_acl_denies_gets_0x80_in_the_suback(locked_broker: Broker) -> None:
    """[MQTT-3.9.3]: on the embedded broker and NATS a SUBSCRIBE filter the login may not read (another
    device's tasks, or a wildcard wider than its own) is refused with return code 0x80 in the
    SUBACK, each filter on its own (the others in the same SUBSCRIBE are granted). On both
    brokers nothing published to such a filter reaches the client."""
    port = locked_broker.port
    device = RawClient(port, "pc-9", login=("pc-9", LOGINS["pc-9"][1]))
    granted = device.subscribe(("devices/pc-9/tasks", 1), ("devices/pc-8/tasks", 1), ("devices/+/tasks", 1), ("devices/#", 0))
    # Mosquitto 2.0.11 grants what its acl_file denies (measured: [1, 1, 1, 0]) and applies the
    # ACL to each message instead, so it too delivers nothing to those filters.
    expected = [1, 1, 1, 0] if locked_broker.kind == "mosquitto" else [1, 0x80, 0x80, 0x80]
    assert granted == expected, f"{locked_broker.kind} answered the SUBSCRIBE with {granted}"
    controller = RawClient(port, "ctl", login=("ctl", LOGINS["ctl"][1]))
    controller.publish("devices/pc-8/tasks", b"for another device")
    controller.publish("devices/pc-9/tasks", b"sentinel")
    got = [(m.topic, m.payload) for m in device.messages_until("devices/pc-9/tasks")]
    assert got == [("devices/pc-9/tasks", b"sentinel")], f"{locked_broker.kind} delivered {got} to a refused filter"
    for client in (device, controller):
        client.disconnect()


def test_embedded_broker_reserves_an_identitys_client_id_for_its_login(tmp_path: Path) -> None:
    """A valid login may not use another identity's name as its client id, so one device cannot
    knock another offline by taking over its id. (Mosquitto has no such rule: there any login
    can take over any client id.)"""
    with running(locked("amqtt", tmp_path)) as broker:
        device = RawClient(broker.port, "pc-9", login=("pc-9", LOGINS["pc-9"][1]))
        assert device.subscribe(("devices/pc-9/tasks", 1)) == [1]
        assert RawClient.refused(broker.port, "pc-9", ("ctl", LOGINS["ctl"][1])) == 5
        controller = RawClient(broker.port, "controller-1", login=("ctl", LOGINS["ctl"][1]))  # its own id is fine
        controller.publish("devices/pc-9/tasks", b"still connected")
        assert device.next_message().payload == b"still connected"
        wait_for(lambda: "client id pc-9 belongs to identity pc-9" in broker.process.log_tail(), 5, what="the refusal in the log")
        assert LOGINS["ctl"][1] not in broker.process.log_path.read_text()
