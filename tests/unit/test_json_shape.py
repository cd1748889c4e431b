"""Messages too deeply nested or holding a lone surrogate: named by `unusable_json`, and a task
message like that is rejected by the device under its sender's id."""

from __future__ import annotations

import json
from typing import Any

from device.handlers.registry import load_registry
from device.intake import Rejection, read_task
from schemas.json_shape import MAX_DEPTH, unusable_json


def nested(levels: int) -> dict[str, Any]:
    root: dict[str, Any] = {}
    node = root
    for _ in range(levels - 1):
        node["a"] = {}
        node = node["a"]
    return root


def test_depth_and_surrogates() -> None:
    assert unusable_json(nested(MAX_DEPTH), "x") is None
    assert "32 levels" in (unusable_json(nested(MAX_DEPTH + 1), "x") or "")
    assert "32 levels" in (unusable_json({"a": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}, "x") or "")
    assert "surrogate" in (unusable_json(json.loads('{"m": "\\ud800"}'), "x") or "")
    assert "surrogate" in (unusable_json(json.loads('{"m": [{"\\udc00": 1}]}'), "x") or "")
    assert unusable_json({"m": "ok ✓ \U0001f600", 1: [None, 2.5, True]}, "x") is None


def test_device_rejects_under_the_senders_id() -> None:
    registry = load_registry()
    topic = "devices/pc-01/tasks"
    for raw in ('{"id": "s-1", "type": "echo", "params": {"message": "\\ud800"}}',
                json.dumps({"id": "s-1", "type": "echo", "params": {"data": nested(200)}})):
        outcome = read_task(topic, raw.encode(), device_id="pc-01", registry=registry, max_payload_bytes=10**6)
        assert isinstance(outcome, Rejection) and outcome.task_id == "s-1" and outcome.code == "invalid_json"
    broadcast = read_task("fleet/broadcast/tasks", b'{"id": "b-1", "type": "echo", "params": {"message": "\\udfff"}}',
                          device_id="pc-01", registry=registry, max_payload_bytes=10**6)
    assert isinstance(broadcast, Rejection) and broadcast.task_id == "b-1:pc-01"
    lone_id = read_task(topic, b'{"id": "\\ud800", "type": "echo"}', device_id="pc-01", registry=registry,
                        max_payload_bytes=10**6)
    assert isinstance(lone_id, Rejection) and lone_id.task_id != "\ud800"
    lone_id.summary.model_dump_json()  # the rejection itself can be sent
