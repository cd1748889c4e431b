"""The fleet's logins and topic ACLs on a real nats-server (issue 14): the controller's identity
service writes the NATS authorization file and reloads the server by SIGHUP through its pid file,
and NATS enforces what Mosquitto's ACL file says. A device reads its own, broadcast and group
tasks and writes its own results and status, at QoS 1; it can neither read another device's
tasks nor publish, or retain, as another device, nor get another's tasks by taking over its
client id; the controller and the operator can do their part and no more; an anonymous client,
an unknown user and a wrong password are refused; a revoked login is refused after the reload
(and its open connection closed); with no identity at all the server still admits nobody.

Absence is proven with sentinels: a later message that the broker must deliver after anything
that would have leaked. On nats-server only messages on one path keep their order (each QoS 1
subscription is its own JetStream consumer; QoS 0 goes around JetStream), so a sentinel is sent
on every subscription a leak could take, and a test waits for all of them (`until_all`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from broker.credentials import write_atomically
from broker.nats_auth import nats_authorization
from config.settings import FleetSettings, load_settings
from controller.db import create_sessionmaker, open_database
from controller.services.identities import add_identity, apply_to_broker, revoke_identity
from schemas.api import IdentityCreate
from tests.harness import wait_for
from tests.integration.broker_conformance.mqtt_kit import RawClient, client_id, running
from tests.nats_broker import NatsBroker

pytestmark = pytest.mark.integration

REFUSED = 0x80
IDENTITIES = {"d1": ("device", ["lab"]), "d2": ("device", ["field"]), "ctl": ("controller", []), "ops": ("operator", [])}


def until_all(client: RawClient, *expected: tuple[str, bytes], timeout: float = 10) -> list[tuple[str, bytes]]:
    """Every message `client` gets until each of `expected` (topic, payload) has arrived."""
    got: list[tuple[str, bytes]] = []
    deadline = time.monotonic() + timeout
    while not set(expected) <= set(got):
        message = client.next_message(max(deadline - time.monotonic(), 0.001))
        got.append((message.topic, message.payload))
    return got


@dataclass
class Fleet:
    broker: NatsBroker
    settings: FleetSettings
    sessions: sessionmaker[Session]
    secrets: dict[str, str]

    def connect(self, name: str, *, as_id: str | None = None, clean: bool = True) -> RawClient:
        return RawClient(self.broker.port, as_id or client_id(name), clean=clean, login=(name, self.secrets[name]))

    def provision(self, name: str, role: str = "device") -> str:
        with self.sessions() as session:
            _identity, secret = add_identity(session, IdentityCreate(name=name, role=role))  # type: ignore[arg-type]
            outcome = apply_to_broker(session, self.settings)
        assert "reloaded" in outcome, outcome
        return secret

    def revoke(self, name: str) -> None:
        with self.sessions() as session:
            revoke_identity(session, name)
            outcome = apply_to_broker(session, self.settings)
        assert "reloaded" in outcome, outcome


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """A nats-server whose authorization file the identity service wrote for IDENTITIES."""
    work = tmp_path_factory.mktemp("nats-acl")
    auth_file, pid_file = work / "auth" / "fleet-auth.conf", work / "nats.pid"
    settings = load_settings(database_url=f"sqlite:///{work / 'controller.db'}", data_dir=str(work),
                             nats_auth_file=str(auth_file), broker_pid_file=str(pid_file))
    engine = open_database(settings.resolved_database_url)
    sessions = create_sessionmaker(engine)
    secrets: dict[str, str] = {}
    with sessions() as session:
        for name, (role, groups) in IDENTITIES.items():
            _identity, secrets[name] = add_identity(session, IdentityCreate(name=name, role=role, groups=groups))  # type: ignore[arg-type]
        assert "could not be reloaded" in apply_to_broker(session, settings)  # no server yet: said, not raised
    try:
        with running(NatsBroker(work, auth_file, pid_file)) as broker:
            wait_for(pid_file.exists, 10, what="nats-server's pid file")
            yield Fleet(broker, settings, sessions, secrets)
    finally:
        engine.dispose()


def test_a_device_reads_its_tasks_and_writes_its_results_and_status(fleet: Fleet) -> None:
    """Every topic the device's rules allow works end to end at QoS 1, including the retained
    status a controller that subscribes later still gets."""
    device = fleet.connect("d1", as_id="d1")
    assert device.subscribe(("devices/d1/tasks", 1), ("fleet/broadcast/tasks", 1), ("fleet/groups/lab/tasks", 1),
                            ("devices/d1/status", 1)) == [1, 1, 1, 1]
    controller = fleet.connect("ctl", clean=False)
    assert controller.subscribe(("devices/#", 1)) == [1]
    device.publish("devices/d1/status", b"online", retain=True)
    device.publish("devices/d1/results", b"result")
    device.publish("devices/d1/heartbeat", b"beat", qos=0)
    sent = [("devices/d1/status", b"online"), ("devices/d1/results", b"result"), ("devices/d1/heartbeat", b"beat")]
    assert sorted(until_all(controller, *sent)) == sorted(sent)
    tasks = [("devices/d1/tasks", b"task"), ("fleet/broadcast/tasks", b"task"), ("fleet/groups/lab/tasks", b"task")]
    for topic, payload in tasks:
        controller.publish(topic, payload)
    assert sorted(until_all(device, *tasks)) == sorted([("devices/d1/status", b"online"), *tasks])
    late = fleet.connect("ctl")
    assert late.subscribe(("devices/+/status", 1)) == [1]
    retained = late.next_message()
    assert (retained.topic, retained.payload, retained.retain) == ("devices/d1/status", b"online", True)
    device.publish("devices/d1/status", b"", retain=True)  # cleared: the other tests see no retained message
    for client in (device, controller, late):
        client.disconnect()


def test_a_device_can_neither_read_nor_write_as_another(fleet: Fleet) -> None:
    """d1, with its own valid login, tries what a compromised PC would: each forbidden filter is
    refused with 0x80, its forged publishes (and a forged retained status) reach nobody."""
    d1 = fleet.connect("d1")
    denied = [("devices/d2/tasks", 1), ("devices/+/tasks", 1), ("devices/#", 0), ("#", 1), ("fleet/groups/field/tasks", 1),
              ("devices/d2/status", 1), ("$MQTT/sub/#", 1), ("$MQTT/+/#", 1), ("fleet/#", 1)]
    assert d1.subscribe(*denied) == [REFUSED] * len(denied)
    d2 = fleet.connect("d2")
    assert d2.subscribe(("devices/d2/tasks", 1), ("fleet/broadcast/tasks", 1)) == [1, 1]
    controller = fleet.connect("ctl")
    assert controller.subscribe(("devices/#", 1)) == [1]
    for topic in ("devices/d2/results", "devices/d2/tasks", "fleet/broadcast/tasks", "devices/d1/tasks"):
        d1.publish(topic, b"forged")  # nats-server acknowledges a denied PUBLISH and drops it
    d1.publish("devices/d2/status", b"forged", retain=True)
    sentinels = [("devices/d2/tasks", b"sentinel"), ("fleet/broadcast/tasks", b"sentinel")]
    for topic, payload in sentinels:
        controller.publish(topic, payload)
    assert sorted(until_all(d2, *sentinels)) == sorted(sentinels)
    d2.publish("devices/d2/results", b"real")
    seen = until_all(controller, ("devices/d2/tasks", b"sentinel"), ("devices/d2/results", b"real"))
    assert seen == [("devices/d2/tasks", b"sentinel"), ("devices/d2/results", b"real")]
    late = fleet.connect("ctl")  # no forged retained status either (retained ones come right after the SUBACK)
    assert late.subscribe(("devices/d2/status", 1)) == [1]
    d2.publish("devices/d2/status", b"sentinel")
    assert until_all(late, ("devices/d2/status", b"sentinel")) == [("devices/d2/status", b"sentinel")]
    for client in (d1, d2, controller, late):
        client.disconnect()


def test_taking_over_another_devices_client_id_gets_none_of_its_tasks(fleet: Fleet) -> None:
    """nats-server lets any login use any client id (Mosquitto's use_username_as_clientid has no
    NATS counterpart), so d1 can resume d2's persistent session; the session's subscriptions are
    checked against d1's permissions again, so d2's queued QoS 1 tasks do not reach it."""
    d2 = fleet.connect("d2", as_id="d2-persistent", clean=False)
    assert d2.subscribe(("devices/d2/tasks", 1)) == [1]
    d2.disconnect()
    controller = fleet.connect("ctl")
    controller.publish("devices/d2/tasks", b"queued while away")
    thief = fleet.connect("d1", as_id="d2-persistent", clean=False)
    assert thief.subscribe(("devices/d1/tasks", 1)) == [1]
    controller.publish("devices/d2/tasks", b"while taken over")
    controller.publish("devices/d1/tasks", b"sentinel")
    assert until_all(thief, ("devices/d1/tasks", b"sentinel")) == [("devices/d1/tasks", b"sentinel")]
    # and the reason, beyond the sentinel's reach: nats-server refused to restore the session's
    # subscription for d1, so no consumer delivers d2's tasks to this connection
    violation = 'Subscription Violation - User "d1", Subject "devices.d2.tasks"'
    wait_for(lambda: violation in fleet.broker.process.log_path.read_text(), 10, what="the refused restore in the log")
    for client in (thief, controller):
        client.disconnect()


def test_the_controller_and_the_operator_do_their_part_only(fleet: Fleet) -> None:
    """The controller reads every device topic and commands anyone, but cannot forge a result;
    the operator commands and watches results and status, but cannot read tasks."""
    controller = fleet.connect("ctl")
    assert controller.subscribe(("devices/#", 1), ("fleet/#", 1)) == [1, REFUSED]
    operator = fleet.connect("ops")
    assert operator.subscribe(("devices/+/results", 1), ("devices/+/status", 1), ("devices/+/tasks", 1)) == [1, 1, REFUSED]
    d1 = fleet.connect("d1")
    assert d1.subscribe(("devices/d1/tasks", 1), ("fleet/broadcast/tasks", 1)) == [1, 1]
    controller.publish("devices/d1/results", b"forged by the controller")
    operator.publish("devices/d1/tasks", b"by hand")
    controller.publish("fleet/broadcast/tasks", b"to all")
    commands = [("devices/d1/tasks", b"by hand"), ("fleet/broadcast/tasks", b"to all")]
    assert sorted(until_all(d1, *commands)) == sorted(commands)
    d1.publish("devices/d1/results", b"real")  # the same consumer as the forged one, so after it
    assert until_all(operator, ("devices/d1/results", b"real")) == [("devices/d1/results", b"real")]
    for client in (controller, operator, d1):
        client.disconnect()


def test_anonymous_unknown_and_wrong_logins_are_refused(fleet: Fleet) -> None:
    anonymous = RawClient.__new__(RawClient)
    code, _present = anonymous.try_connect(fleet.broker.port, client_id("anonymous"))
    anonymous.drop()
    assert code in (4, 5), f"an anonymous CONNECT got return code {code}"
    assert RawClient.refused(fleet.broker.port, client_id("who"), ("nobody", fleet.secrets["d1"])) in (4, 5)
    assert RawClient.refused(fleet.broker.port, client_id("d1"), ("d1", fleet.secrets["d2"])) in (4, 5)


def test_a_revoked_login_is_refused_after_the_reload(fleet: Fleet) -> None:
    """Provisioning and revoking go through the identity service, which rewrites the file and
    sends SIGHUP; nothing is restarted. nats-server also closes the revoked login's connection."""
    secret = fleet.provision("d3")

    def admitted() -> RawClient | None:
        client = RawClient.__new__(RawClient)
        try:
            code, _present = client.try_connect(fleet.broker.port, "d3", login=("d3", secret))
        except ConnectionError:  # a CONNECT that met the reload may be closed unanswered
            client.drop()
            return None
        if code != 0:
            client.drop()
        return client if code == 0 else None

    d3: RawClient = wait_for(admitted, 15, 0.1, "the new login admitted after the reload")
    assert d3.subscribe(("devices/d3/tasks", 1)) == [1]
    fleet.revoke("d3")
    assert d3.closed_by_broker(15), "the revoked login's connection stayed open"
    assert RawClient.refused(fleet.broker.port, "d3", ("d3", secret)) in (4, 5)


def test_with_no_identity_the_server_admits_nobody(tmp_path: Path) -> None:
    """An authorization file with no users would open nats-server to anyone; the file written
    for an empty fleet holds a login nobody can use instead."""
    auth_file = tmp_path / "fleet-auth.conf"
    text, left_out = nats_authorization([])
    write_atomically(auth_file, text)
    assert left_out == []
    with running(NatsBroker(tmp_path, auth_file, tmp_path / "nats.pid")) as broker:
        anonymous = RawClient.__new__(RawClient)
        code, _present = anonymous.try_connect(broker.port, client_id("anonymous"))
        anonymous.drop()
        assert code in (4, 5), f"an anonymous CONNECT got return code {code}"
