"""The device's intake of task messages: size and JSON checks, field errors, unknown types,
task ids for ad-hoc and fanned-out tasks, cancels, signed tasks and retained task messages.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from device.handlers.registry import HandlerRegistry, load_registry
from device.intake import CancelRequest, Rejection, TaskRequest, read_task
from device.journal import Journal
from schemas.common import TASK_ID_PATTERN, utcnow
from schemas.tasks import EchoParams
from tests.unit.device_kit import DEVICE

OWN_TOPIC = f"devices/{DEVICE}/tasks"
LIMIT = 4096


@pytest.fixture(scope="module")
def registry() -> HandlerRegistry:
    return load_registry()


def intake(registry: HandlerRegistry, payload: bytes | str | dict[str, Any], topic: str = OWN_TOPIC) -> Any:
    raw = (
        payload
        if isinstance(payload, bytes)
        else (payload if isinstance(payload, str) else json.dumps(payload)).encode()
    )
    return read_task(topic, raw, device_id=DEVICE, registry=registry, max_payload_bytes=LIMIT)


def rejection(result: Any, code: str) -> Rejection:
    assert isinstance(result, Rejection), result
    assert result.code == code, result.message
    assert re.fullmatch(TASK_ID_PATTERN, result.task_id)
    return result


def test_payload_too_large(registry: HandlerRegistry) -> None:
    result = rejection(
        intake(registry, {"id": "t1", "type": "echo", "params": {"message": "x" * LIMIT}}), "payload_too_large"
    )
    assert str(LIMIT) in result.message and "bytes" in result.message
    assert result.task_id != "t1"  # not parsed
    assert result.summary.type == "invalid" and result.summary.source_topic == OWN_TOPIC


@pytest.mark.parametrize("payload", [b"\xff\xfe{}", "{not json", "[1, 2]", '"text"', "null", "[" * 4000])
def test_invalid_json(registry: HandlerRegistry, payload: bytes | str) -> None:
    result = rejection(intake(registry, payload), "invalid_json")
    assert result.summary.type == "invalid"


def test_invalid_task_names_each_bad_field(registry: HandlerRegistry) -> None:
    result = rejection(intake(registry, {"id": "t9", "type": "echo", "timeout": -1, "colour": "red"}), "invalid_task")
    assert result.task_id == "t9"
    assert "timeout" in result.message and "colour" in result.message
    assert result.summary.type == "echo"


def test_invalid_task_without_a_valid_id_gets_a_fresh_one(registry: HandlerRegistry) -> None:
    result = rejection(intake(registry, {"id": "bad id!", "type": 5}), "invalid_task")
    assert result.task_id != "bad id!"
    assert "id" in result.message and "type" in result.message
    assert result.summary.type == "invalid"


def test_unknown_type_lists_supported_types(registry: HandlerRegistry) -> None:
    result = rejection(intake(registry, {"id": "t2", "type": "teleport"}), "unknown_type")
    assert result.task_id == "t2"
    assert "teleport" in result.message
    assert all(name in result.message for name in ("echo", "ping", "sleep", "upload", "cancel", "input"))


def test_invalid_params_names_the_field_but_not_the_value(registry: HandlerRegistry) -> None:
    result = rejection(
        intake(registry, {"id": "t3", "type": "sleep", "params": {"seconds": "secret-value"}}), "invalid_params"
    )
    assert "params.seconds" in result.message
    assert "secret-value" not in result.message
    assert result.summary.type == "sleep"


def test_adhoc_task_without_id_gets_one(registry: HandlerRegistry) -> None:
    result = intake(registry, {"type": "ping"})
    assert isinstance(result, TaskRequest)
    assert re.fullmatch(TASK_ID_PATTERN, result.task_id)
    assert result.summary.source_topic == OWN_TOPIC and result.summary.broadcast_id is None


def test_valid_task_keeps_its_id_and_parses_params(registry: HandlerRegistry) -> None:
    result = intake(registry, {"id": "t4", "type": "echo", "account": "acct", "params": {"message": "hi"}})
    assert isinstance(result, TaskRequest)
    assert result.task_id == "t4"
    assert isinstance(result.params, EchoParams) and result.params.message == "hi"
    assert result.summary.account == "acct" and result.summary.params == {"message": "hi"}


@pytest.mark.parametrize("topic", ["fleet/broadcast/tasks", "fleet/groups/g1/tasks"])
def test_fanned_out_task_runs_as_the_devices_own_run(registry: HandlerRegistry, topic: str) -> None:
    result = intake(registry, {"id": "b1", "type": "echo"}, topic)
    assert isinstance(result, TaskRequest)
    assert result.task_id == f"b1:{DEVICE}" and result.envelope.broadcast_id == "b1"
    assert result.summary.broadcast_id == "b1" and result.summary.source_topic == topic

    adhoc = intake(registry, {"type": "echo"}, topic)
    assert isinstance(adhoc, TaskRequest)
    assert adhoc.task_id == f"{adhoc.envelope.broadcast_id}:{DEVICE}"


def test_hand_written_broadcast_without_id_is_a_new_task_each_time(registry: HandlerRegistry) -> None:
    payload = b'{"type": "echo", "params": {"message": "by hand"}}'

    def run_on(device_id: str) -> TaskRequest:
        result = read_task(
            "fleet/broadcast/tasks", payload, device_id=device_id, registry=registry, max_payload_bytes=LIMIT
        )
        assert isinstance(result, TaskRequest)
        return result

    first, again = run_on("pc-a"), run_on("pc-a")
    assert first.envelope.broadcast_id is not None and re.fullmatch(TASK_ID_PATTERN, first.envelope.broadcast_id)
    assert first.task_id == f"{first.envelope.broadcast_id}:pc-a"
    assert again.task_id != first.task_id  # repeating a hand-written broadcast runs it again

    with_id = b'{"id": "bc-1", "type": "echo"}'
    runs = [read_task("fleet/broadcast/tasks", with_id, device_id=d, registry=registry, max_payload_bytes=LIMIT) for d in ("pc-a", "pc-b")]
    assert [r.task_id for r in runs] == ["bc-1:pc-a", "bc-1:pc-b"]  # type: ignore[union-attr]


def test_redispatched_broadcast_run_keeps_its_id(registry: HandlerRegistry) -> None:
    result = intake(registry, {"id": f"b1:{DEVICE}", "type": "echo", "broadcast_id": "b1"})
    assert isinstance(result, TaskRequest)
    assert result.task_id == f"b1:{DEVICE}" and result.envelope.broadcast_id == "b1"


def test_cancel(registry: HandlerRegistry) -> None:
    assert intake(registry, {"type": "cancel", "params": {"task_id": "t1"}}) == CancelRequest("t1")
    assert intake(registry, {"type": "cancel", "params": {"task_id": "b1"}}, "fleet/broadcast/tasks") == CancelRequest(
        f"b1:{DEVICE}"
    )
    rejection(intake(registry, {"type": "cancel", "params": {}}), "invalid_params")


def test_signed_tasks_fresh_unaltered_and_once(registry: HandlerRegistry, tmp_path: Path) -> None:
    from datetime import timedelta

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from schemas.signing import Signer, key_id, public_key_text, trusted_keys
    from schemas.tasks import TaskEnvelope

    signer = Signer(Ed25519PrivateKey.generate())
    trusted = trusted_keys([public_key_text(signer.public_key)])
    assert set(trusted) == {signer.key_id} == {key_id(signer.public_key)}
    journal = Journal(tmp_path / "j.sqlite3")

    def check(envelope: TaskEnvelope | dict[str, Any], keys: Any = trusted, topic: str = OWN_TOPIC) -> Any:
        raw = envelope.model_dump_json(exclude_none=True) if isinstance(envelope, TaskEnvelope) else json.dumps(envelope)
        return read_task(topic, raw.encode(), device_id=DEVICE, registry=registry, max_payload_bytes=LIMIT,
                         trusted_keys=keys, remember_nonce=journal.remember_nonce)

    signed = signer.sign(TaskEnvelope(id="s1", type="ping"), OWN_TOPIC)
    assert isinstance(check(signed), TaskRequest)
    assert isinstance(check(signed), TaskRequest)  # a redelivery: the journal answers it, not a rejection
    assert rejection(check({"id": "s2", "type": "ping"}), "unsigned")
    altered = signed.model_copy(update={"type": "sleep"})
    assert rejection(check(altered), "invalid_signature")
    retargeted = signed.model_copy(update={"target": "fleet/broadcast/tasks"})  # the target is signed too
    assert rejection(check(retargeted, topic="fleet/broadcast/tasks"), "invalid_signature")
    assert rejection(check(signed, topic="fleet/broadcast/tasks"), "wrong_target")
    assert rejection(check(signed, topic="devices/other/tasks"), "wrong_target")
    impostor = Signer(Ed25519PrivateKey.generate())
    assert rejection(check(impostor.sign(TaskEnvelope(id="s4", type="ping"), OWN_TOPIC)), "unknown_signing_key")
    forged = impostor.sign(TaskEnvelope(id="s5", type="ping"), OWN_TOPIC).model_copy(update={"key_id": signer.key_id})
    assert rejection(check(forged), "invalid_signature")  # a key of its own, passed off under the trusted id
    old = signer.sign(TaskEnvelope(id="s3", type="ping"), OWN_TOPIC, now=utcnow() - timedelta(minutes=10))
    assert rejection(check(old), "stale_signature")
    anonymous = signer.sign(TaskEnvelope(type="ping"), OWN_TOPIC)
    assert isinstance(check(anonymous), TaskRequest)
    assert rejection(check(anonymous), "replayed_nonce")  # an id-less task would otherwise run again
    journal.close()


def test_a_retained_task_message_is_rejected_not_run(registry: HandlerRegistry) -> None:
    """Issue 12: a retained task would run again on every reconnect; it is refused, under a
    fresh id (never the id it names, which may be a real task's)."""
    raw = json.dumps({"id": "job-42", "type": "ping"}).encode()
    result = read_task(OWN_TOPIC, raw, device_id=DEVICE, registry=registry, max_payload_bytes=LIMIT, retained=True)
    refused = rejection(result, "retained_task")
    assert refused.task_id != "job-42" and "-r -n" in refused.message
    assert not isinstance(read_task(OWN_TOPIC, raw, device_id=DEVICE, registry=registry, max_payload_bytes=LIMIT), Rejection)


def test_task_topics_are_recognised() -> None:
    from schemas.topics import is_task_topic

    assert all(map(is_task_topic, ["devices/pc-1/tasks", "fleet/broadcast/tasks", "fleet/groups/lab/tasks"]))
    assert not any(map(is_task_topic, ["devices/pc-1/status", "devices/pc-1/results", "fleet/broadcast", "devices/tasks"]))
