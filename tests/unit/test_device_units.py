"""Fast tests of the device's building blocks without a broker: journal (real SQLite file),
identity, handler registry, intake validation and presence bookkeeping."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from config import FleetSettings
from device.handlers.base import TaskContext, TaskHandler
from device.handlers.diagnostics import EchoHandler, PingHandler, SleepHandler
from device.handlers.registry import HandlerRegistry, load_registry
from device.identity import resolve_device_id
from device.intake import CancelRequest, Rejection, TaskRequest, read_task
from device.journal import ClaimStatus, Journal, TaskState, journal_path
from device.presence import Presence
from schemas.common import DEVICE_ID_PATTERN, TASK_ID_PATTERN, utcnow
from schemas.events import EventKind, TaskEvent
from schemas.status import DeviceFacts, DeviceStatus
from schemas.tasks import EchoParams

DEVICE = "pc-01"
OWN_TOPIC = f"devices/{DEVICE}/tasks"
LIMIT = 4096


def settings(tmp_path: Path, **values: Any) -> FleetSettings:
    return FleetSettings(data_dir=tmp_path, **values)


def event(task_id: str, kind: EventKind, seq: int, **fields: Any) -> TaskEvent:
    return TaskEvent(task_id=task_id, device_id=DEVICE, event=kind, seq=seq, at=utcnow(), session_id="s-1", **fields)


# --- journal ----------------------------------------------------------------------------------


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    opened = Journal(journal_path(tmp_path, DEVICE))
    yield opened
    opened.close()


def test_journal_file_is_named_after_the_device(tmp_path: Path, journal: Journal) -> None:
    assert journal.path == tmp_path / f"journal-{DEVICE}.sqlite3"
    assert journal.path.is_file()


def test_claim_is_new_once_then_in_progress(journal: Journal) -> None:
    first = journal.claim("t1", "echo", "acct")
    second = journal.claim("t1", "echo", "acct")
    assert first.status == ClaimStatus.NEW
    assert second.status == ClaimStatus.IN_PROGRESS and second.state == TaskState.ACCEPTED
    journal.mark_started("t1")
    assert journal.claim("t1", "echo", "acct").state == TaskState.STARTED


def test_finished_task_is_answered_with_its_recorded_event(journal: Journal) -> None:
    journal.claim("t1", "echo", None)
    assert [journal.next_seq("t1") for _ in range(2)] == [1, 2]
    journal.mark_started("t1")
    final = event("t1", EventKind.SUCCEEDED, journal.next_seq("t1"), result={"message": "hi"})
    journal.finish("t1", final)

    again = journal.claim("t1", "echo", None)
    assert again.status == ClaimStatus.FINAL
    assert again.final_event == final
    assert journal.next_seq("t1") == 4  # a replay continues the numbering
    assert journal.execution_count("t1") == 1


def test_journal_survives_reopening(tmp_path: Path) -> None:
    path = journal_path(tmp_path, DEVICE)
    first = Journal(path)
    first.claim("t1", "sleep", None)
    first.mark_started("t1")
    first.claim("t2", "echo", "a")
    first.claim("t3", "echo", None)
    first.finish("t3", event("t3", EventKind.SUCCEEDED, first.next_seq("t3"), result={}))
    first.close()

    reopened = Journal(path)
    try:
        unfinished = {entry.run.task_id: entry.state for entry in reopened.unfinished()}
        assert unfinished == {"t1": TaskState.STARTED, "t2": TaskState.ACCEPTED}
        assert reopened.execution_count("t1") == 1
        assert reopened.execution_count("t2") == 0
        assert reopened.claim("t3", "echo", None).status == ClaimStatus.FINAL
    finally:
        reopened.close()


def test_an_id_never_delivered_can_be_recorded_final(journal: Journal) -> None:
    assert journal.get("later") is None
    seq = journal.next_seq("later")
    journal.finish("later", event("later", EventKind.CANCELED, seq, message="canceled before it arrived"))
    claim = journal.claim("later", "echo", None)
    assert claim.status == ClaimStatus.FINAL
    assert claim.final_event is not None and claim.final_event.event == EventKind.CANCELED
    assert journal.next_seq("later") == seq + 1
    assert journal.unfinished() == []


# --- identity ---------------------------------------------------------------------------------


def test_configured_device_id_wins(tmp_path: Path) -> None:
    assert resolve_device_id(settings(tmp_path, device_id="pc-07")) == "pc-07"
    assert not (tmp_path / "device_id").exists()


def test_generated_device_id_is_stored_once_and_stable(tmp_path: Path) -> None:
    data_dir = tmp_path / "nested" / "data"
    first = resolve_device_id(settings(data_dir))
    assert re.fullmatch(DEVICE_ID_PATTERN, first)
    assert re.fullmatch(r".+-[0-9a-f]{6}", first)
    assert (data_dir / "device_id").read_text(encoding="utf-8").strip() == first
    assert resolve_device_id(settings(data_dir)) == first


def test_stored_device_id_is_read_stripped(tmp_path: Path) -> None:
    (tmp_path / "device_id").write_text("  office-pc \n", encoding="utf-8")
    assert resolve_device_id(settings(tmp_path)) == "office-pc"


@pytest.mark.parametrize("content", ["", "bad id/with slash", "x" * 65, "#wild+"])
def test_invalid_device_id_file_is_a_clear_error(tmp_path: Path, content: str) -> None:
    path = tmp_path / "device_id"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError) as info:
        resolve_device_id(settings(tmp_path))
    message = str(info.value)
    assert str(path) in message and "FLEET_DEVICE_ID" in message and "delete" in message


# --- registry ---------------------------------------------------------------------------------


def test_builtin_handlers_are_found_through_entry_points() -> None:
    registry = load_registry()
    assert {"ping", "echo", "sleep"} <= set(registry.types())
    assert isinstance(registry.get("ping"), PingHandler)
    assert isinstance(registry.get("echo"), EchoHandler)
    assert isinstance(registry.get("sleep"), SleepHandler)
    assert all(registry.get(name).safe_to_retry for name in ("ping", "echo", "sleep"))  # type: ignore[union-attr]
    assert registry.get("nope") is None


class _Shout(TaskHandler[EchoParams]):
    type = "shout"
    params_model = EchoParams

    async def run(self, ctx: TaskContext, params: EchoParams) -> dict[str, Any]:
        return {"message": params.message.upper()}


def test_register_validates_handlers() -> None:
    registry = HandlerRegistry()
    registry.register(_Shout)
    assert registry.types() == ["shout"]
    with pytest.raises(ValueError, match="already handled"):
        registry.register(_Shout)
    with pytest.raises(ValueError, match="cancel"):
        registry.register(type("C", (_Shout,), {"type": "cancel"}))
    with pytest.raises(ValueError, match="must match"):
        registry.register(type("B", (_Shout,), {"type": "Bad Type"}))
    with pytest.raises(TypeError):
        registry.register(object())  # type: ignore[arg-type]


def test_a_broken_plugin_is_logged_and_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    dist_info = tmp_path / "fleet_test_plugins-0.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: fleet-test-plugins\nVersion: 0.1\n")
    (dist_info / "entry_points.txt").write_text(
        "[fleet.test_handlers]\n"
        "missing = no_such_module_for_fleet_tests:Handler\n"
        "not_a_handler = json:dumps\n"
        "shout = tests.unit.test_device_units:_Shout\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = HandlerRegistry()
    registry.load_entry_points(group="fleet.test_handlers")
    assert registry.types() == ["shout"]
    skipped = [record.getMessage() for record in caplog.records if "skipped" in record.getMessage()]
    assert len(skipped) == 2 and any("missing" in line for line in skipped)


# --- intake -----------------------------------------------------------------------------------


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


# --- presence ---------------------------------------------------------------------------------


def test_session_ids_and_stale_wills() -> None:
    facts = DeviceFacts(name="pc", version="0", hostname="pc", os="x", python="3", max_concurrency=1, keepalive=30)
    presence = Presence(DEVICE, facts)
    first = presence.next_session()
    assert re.fullmatch(r"[0-9a-f]{8}-1", first)
    will = DeviceStatus.model_validate_json(presence.will())
    assert (will.state, will.session_id, will.reason) == ("offline", first, "connection lost")

    stale = will
    second = presence.next_session()
    assert second.endswith("-2") and second != first
    assert not presence.claim_rebirth(stale)  # not born yet: the birth is still coming
    birth = DeviceStatus.model_validate_json(presence.birth())
    assert (birth.state, birth.session_id, birth.facts) == ("online", second, facts)
    assert presence.claim_rebirth(stale)
    assert not presence.claim_rebirth(stale)  # at most once per session
    own_will = DeviceStatus.model_validate_json(presence.will())
    assert not presence.claim_rebirth(own_will)


def test_duplicate_id_guard_confirms_after_three_contested_connects_and_backs_off() -> None:
    from device.conflicts import FIRST_PAUSE, MAX_PAUSE, WINDOW, DuplicateIdGuard

    now = [0.0]
    guard = DuplicateIdGuard(clock=lambda: now[0])
    assert guard.contested() is None  # a PC that lost power takes its old session over once
    now[0] += WINDOW + 1
    assert guard.contested() is None and guard.contested() is None  # the first one aged out
    assert guard.contested() == FIRST_PAUSE
    assert guard.contested() == 2 * FIRST_PAUSE
    for _ in range(10):
        guard.contested()
    assert guard.pause == MAX_PAUSE
    guard.reset()
    assert guard.pause == 0 and guard.contested() is None


def test_every_locator_an_adapter_uses_is_in_its_locator_file() -> None:
    import inspect

    from device.platforms.registry import load_platforms

    platforms = load_platforms()
    assert {"reference", "douyin"} <= set(platforms)
    for name, adapter in platforms.items():
        source = inspect.getsource(inspect.getmodule(adapter))  # type: ignore[arg-type]
        locators = adapter().locators
        selectors = set(re.findall(r'(?:element|visible)\(page, "(\w+)"', source))
        selectors |= set(re.findall(r'css\("(\w+)"\)', source))
        selectors |= {n for group in re.findall(r"first_of\(page, \[([^\]]+)\]", source) for n in re.findall(r'"(\w+)"', group)}
        pages = set(re.findall(r'(?:open|at)\(page, "(\w+)"\)', source))
        assert selectors and pages, name
        assert selectors <= set(locators.selectors), f"{name}: {sorted(selectors - set(locators.selectors))}"
        assert pages <= set(locators.pages), f"{name}: {sorted(pages - set(locators.pages))}"


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
