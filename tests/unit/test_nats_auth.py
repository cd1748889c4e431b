"""The fleet's topic rules as NATS subjects and the authorization file (broker/nats_auth.py),
and the two hashes every issued secret keeps (broker/credentials.py). What nats-server makes
of the file is tested on a real one: tests/integration/test_nats_acl.py."""

from __future__ import annotations

import bcrypt
import pytest

from broker.credentials import (
    Identity,
    acl_file,
    hash_for_brokers,
    rules,
    split_hashes,
    verify_password,
)
from broker.nats_auth import PLACEHOLDER_USER, UnsupportedTopic, nats_authorization, nats_subjects, permissions


@pytest.mark.parametrize(("topic", "subjects"), [
    ("devices/pc-1/tasks", ["devices.pc-1.tasks"]),
    ("devices/+/tasks", ["devices.*.tasks"]),
    ("devices/#", ["devices", "devices.>"]),  # MQTT's '#' also matches its parent level
    ("#", [">"]),
])
def test_mqtt_filters_become_nats_subjects(topic: str, subjects: list[str]) -> None:
    assert nats_subjects(topic) == subjects


@pytest.mark.parametrize("topic", ["devices/pc.1/tasks", "devices//tasks", "/devices", "a b/c", "devices/#/x", "dev+/x", "fleet/groups/>/tasks", "a*/b"])
def test_what_nats_cannot_carry_is_refused(topic: str) -> None:
    with pytest.raises(UnsupportedTopic):
        nats_subjects(topic)


def test_permissions_come_from_the_same_rules_as_mosquittos() -> None:
    device = Identity("pc-1", "device", "", ["lab"])
    allowed = permissions(device)
    assert allowed.publish == ["devices.pc-1.status", "devices.pc-1.results", "devices.pc-1.heartbeat",
                               "devices.pc-1.config.reported"]
    assert allowed.subscribe == ["devices.pc-1.tasks", "fleet.broadcast.tasks", "devices.pc-1.status",
                                 "devices.pc-1.config", "fleet.groups.lab.tasks", "$MQTT.sub.>"]
    mosquitto = acl_file([device])
    for rule in rules(device):
        assert f"topic {rule.access} {rule.pattern}" in mosquitto
    controller = permissions(Identity("ctl", "controller", ""))
    assert controller.subscribe == ["devices", "devices.>", "$MQTT.sub.>"]
    assert controller.publish == ["devices.*.tasks", "devices.*.status", "devices.*.config", "fleet", "fleet.>"]


def test_the_file_names_every_usable_identity_and_why_others_are_left_out() -> None:
    hashed = bcrypt.hashpw(b"secret", bcrypt.gensalt(4)).decode()
    identities = [Identity("pc-1", "device", "", nats_password_hash=hashed), Identity("pc.2", "device", "", nats_password_hash=hashed),
                  Identity("old", "device", "$7$…")]
    text, left_out = nats_authorization(identities)
    assert f'{{user: "pc-1", password: "{hashed}"' in text
    assert '"pc.2"' not in text and '"old"' not in text
    assert [line.split(":")[0] for line in left_out] == ["old", "pc.2"]
    assert "revoke and provision it again" in left_out[0] and "'.'" in left_out[1]


def test_an_empty_fleet_still_needs_a_login() -> None:
    text, left_out = nats_authorization([])
    assert f'user: "{PLACEHOLDER_USER}"' in text and 'deny: [">"]' in text and left_out == []


def test_a_secret_keeps_a_mosquitto_and_a_bcrypt_hash() -> None:
    stored = hash_for_brokers("s3cret-s3cret")
    assert len(stored) <= 200  # the password_hash column
    mosquitto, nats = split_hashes(stored)
    assert mosquitto.startswith("$7$") and nats is not None and nats.startswith("$2b$04$")
    assert bcrypt.checkpw(b"s3cret-s3cret", nats.encode())
    assert verify_password("s3cret-s3cret", stored) and verify_password("s3cret-s3cret", mosquitto)
    assert not verify_password("wrong", stored)
    assert split_hashes(mosquitto) == (mosquitto, None)  # provisioned before NATS support
