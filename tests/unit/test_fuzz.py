"""Bad input, generated: hypothesis drives every MQTT payload parser (the device's intake of task
messages, the controller's routing of status, result and heartbeat messages) with arbitrary
bytes and JSON. Nothing may raise. (schemathesis against a running controller is in
tests/integration/test_openapi_fuzz.py.)"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from config.settings import FleetSettings
from controller.db import create_db_engine, create_sessionmaker, migrate
from controller.mqtt import ControllerMqtt
from device.handlers.registry import load_registry
from device.intake import CancelRequest, InputRequest, Rejection, TaskRequest, read_task

DEVICE = "pc-fuzz"
REGISTRY = load_registry()
REJECTION_CODES = {"payload_too_large", "invalid_json", "invalid_task", "unknown_type", "invalid_params"}
TOPICS = [f"devices/{DEVICE}/tasks", "fleet/broadcast/tasks", "fleet/groups/lab/tasks"]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=40),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=6),
    max_leaves=30,
)
# Objects shaped like envelopes, so the fuzz gets past JSON parsing into the schema checks.
envelopes = st.fixed_dictionaries(
    {},
    optional={
        "id": st.text(max_size=140) | st.integers(),
        "type": st.sampled_from([*REGISTRY.types(), "cancel", "input", "bogus"]) | st.text(max_size=70),
        "params": st.dictionaries(st.text(max_size=12), json_values, max_size=5) | json_values,
        "account": st.text(max_size=210) | st.none(),
        "attempt": st.integers(-3, 200),
        "timeout": st.floats() | st.integers(),
        "expires_at": st.datetimes().map(lambda d: d.isoformat()) | st.text(max_size=30),
    },
)


def check_intake(topic: str, payload: bytes) -> None:
    outcome = read_task(topic, payload, device_id=DEVICE, registry=REGISTRY, max_payload_bytes=4096)
    assert isinstance(outcome, TaskRequest | CancelRequest | InputRequest | Rejection)
    if isinstance(outcome, Rejection):
        assert outcome.code in REJECTION_CODES and outcome.message


@settings(max_examples=1500, deadline=None)
@given(topic=st.sampled_from(TOPICS), payload=st.binary(max_size=5000))
def test_device_intake_survives_any_bytes(topic: str, payload: bytes) -> None:
    check_intake(topic, payload)


@settings(max_examples=1500, deadline=None)
@given(topic=st.sampled_from(TOPICS), envelope=envelopes)
def test_device_intake_survives_any_envelope(topic: str, envelope: dict[str, Any]) -> None:
    check_intake(topic, json.dumps(envelope, allow_nan=True).encode())


@pytest.fixture(scope="module")
def controller_mqtt(tmp_path_factory: pytest.TempPathFactory) -> ControllerMqtt:
    """The controller's real message routing on a real SQLite database (no broker needed:
    messages are handed to it as paho would)."""
    data = tmp_path_factory.mktemp("fuzz-controller")
    settings_ = FleetSettings(data_dir=data, database_url=f"sqlite:///{data / 'c.db'}", max_payload_bytes=4096)
    engine = create_db_engine(settings_.resolved_database_url)
    migrate(engine)
    return ControllerMqtt(settings_, create_sessionmaker(engine))


status_like = st.fixed_dictionaries(
    {"device_id": st.just(DEVICE) | st.text(max_size=70), "state": st.sampled_from(["online", "offline", "away"]),
     "session_id": st.text(max_size=70)},
    optional={"facts": json_values, "reason": json_values, "at": st.text(max_size=30)},
)
event_like = st.fixed_dictionaries(
    {"task_id": st.text(max_size=140), "device_id": st.just(DEVICE), "event": st.sampled_from(
        ["accepted", "started", "progress", "succeeded", "failed", "retrying", "nope"]),
     "seq": st.integers(-2, 10**12), "at": st.just("2026-01-01T00:00:00Z") | st.text(max_size=30),
     "session_id": st.text(max_size=70)},
    optional={"attempt": st.integers(-2, 200), "progress": st.integers(-5, 500), "result": json_values,
              "error": json_values, "details": json_values, "task": json_values},
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    channel=st.sampled_from(["status", "results", "heartbeat", "tasks", "other"]),
    payload=st.binary(max_size=6000) | status_like.map(json.dumps).map(str.encode)
    | event_like.map(json.dumps).map(str.encode),
)
def test_controller_routing_survives_any_payload(controller_mqtt: ControllerMqtt, channel: str, payload: bytes) -> None:
    controller_mqtt._route(f"devices/{DEVICE}/{channel}", payload)  # must not raise
