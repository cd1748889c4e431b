"""The simulated devices of `fleet simulate`: journal semantics, intake and settings, in-process.

The wire is checked with real brokers in tests/integration/test_simulate.py; here a device's
publishes are captured by a stand-in for its connection, to check what it sends and when.
"""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

import pytest

from cli.simulate import raise_open_file_limit
from device.sim_device import SimConfig, SimCounters, SimulatedDevice
from device.sim_intake import SimCancel, SimReject, SimTask, read_sim_task
from device.sim_journal import Claim, MemoryJournal, run_key
from device.sim_pool import FleetPool
from device.simulator import SimulatedFleet, SimulationError, _facts, device_ids
from schemas.errors import WireErrorCode
from schemas.events import TaskEvent
from schemas.topics import BROADCAST_TASKS


def _event(seq: int, kind: str = "succeeded") -> TaskEvent:
    return TaskEvent.model_validate({"task_id": "t1", "device_id": "sim-0000", "event": kind, "seq": seq,
                                     "at": "2026-01-01T00:00:00Z", "session_id": "ab-1"})


def test_journal_claims_a_run_once_and_answers_repeats_with_the_recorded_outcome() -> None:
    journal = MemoryJournal()
    assert journal.claim("t1") == (Claim.NEW, None)
    assert journal.next_seq("t1") == 1
    assert journal.claim("t1") == (Claim.IN_PROGRESS, None)  # a repeat while it runs is ignored
    journal.mark_started("t1")
    assert journal.next_seq("t1") == 2
    final = _event(3)
    assert journal.next_seq("t1") == 3
    journal.finish("t1", final)
    assert journal.claim("t1") == (Claim.FINAL, final)
    assert journal.claim("t1") == (Claim.FINAL, final)
    assert journal.next_seq("t1") == 4  # a replay gets the next number, as the daemon's does
    assert journal.executions("t1") == 1


def test_journal_keys_each_attempt_apart_and_numbers_unknown_runs_from_one() -> None:
    assert run_key("t1", 1) == "t1" and run_key("t1", 3) == "t1#3"
    journal = MemoryJournal()
    journal.claim("t1")
    journal.finish("t1", _event(1, "failed"))
    assert journal.claim(run_key("t1", 2)) == (Claim.NEW, None)  # a retry runs again
    assert journal.next_seq("never-seen") == 1
    assert journal.executions("never-seen") == 0


def test_intake_names_fan_out_runs_and_rejects_like_the_daemon() -> None:
    own = "devices/sim-0000/tasks"

    def read(topic: str, payload: Any, retained: bool = False) -> Any:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        return read_sim_task(topic, data, device_id="sim-0000", own_topic=own, retained=retained,
                             max_payload_bytes=1024)

    direct = read(own, {"id": "t1", "type": "echo", "params": {"message": "hi"}})
    assert isinstance(direct, SimTask) and direct.task_id == "t1" and direct.summary.broadcast_id is None
    fanned = read(BROADCAST_TASKS, {"id": "b1", "type": "ping"})
    assert isinstance(fanned, SimTask) and fanned.task_id == "b1:sim-0000" and fanned.envelope.broadcast_id == "b1"
    codes = {
        WireErrorCode.RETAINED_TASK: read(own, {"id": "t2", "type": "ping"}, retained=True),
        WireErrorCode.PAYLOAD_TOO_LARGE: read(own, b"x" * 2000),
        WireErrorCode.INVALID_JSON: read(own, b"{nope"),
        WireErrorCode.INVALID_TASK: read(own, {"type": "Bad Type"}),
        WireErrorCode.UNKNOWN_TYPE: read(own, {"id": "t3", "type": "upload"}),
        WireErrorCode.INVALID_PARAMS: read(own, {"id": "t4", "type": "sleep", "params": {"seconds": -1}}),
    }
    for code, outcome in codes.items():
        assert isinstance(outcome, SimReject) and outcome.code == code, (code, outcome)
    cancel = read(own, {"type": "cancel", "params": {"task_id": "t1"}})
    assert cancel == SimCancel("t1", None)


class _Wire:
    """Stands in for a device's connection: records what it publishes, acknowledges at once."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []

    async def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        self.sent.append((topic, json.loads(payload)))

    def events(self) -> list[dict[str, Any]]:
        return [payload for topic, payload in self.sent if topic.endswith("/results")]


def _device(failure_rate: float = 0.0, task_seconds: float = 0.0) -> tuple[SimulatedDevice, _Wire, SimCounters]:
    config = SimConfig(host="127.0.0.1", port=1, facts=_facts((), 60, 30.0), heartbeat=30.0,
                       task_seconds=task_seconds, failure_rate=failure_rate, keepalive=60,
                       max_payload_bytes=256 * 1024, rng=random.Random(1), connect_options={})
    counters = SimCounters()
    device = SimulatedDevice("sim-0000", config, counters)
    wire = _Wire()
    device._client = wire  # type: ignore[assignment]
    return device, wire, counters


async def _settle(device: SimulatedDevice) -> None:
    while device._running or device._background:
        await asyncio.sleep(0.01)


def test_a_repeated_task_id_is_answered_from_the_journal_never_run_twice() -> None:
    async def scenario() -> None:
        device, wire, counters = _device()
        task = json.dumps({"id": "t1", "type": "echo", "params": {"message": "hi"}}).encode()
        device._route("devices/sim-0000/tasks", task, False)
        device._route("devices/sim-0000/tasks", task, False)  # while it runs: ignored
        await _settle(device)
        device._route("devices/sim-0000/tasks", task, False)  # after it finished: replayed
        await _settle(device)
        events = wire.events()
        assert [(e["event"], e["seq"], e.get("replay", False)) for e in events] == [
            ("accepted", 1, False), ("started", 2, False), ("succeeded", 3, False), ("succeeded", 4, True)]
        assert events[-1]["result"] == events[2]["result"] == {"simulated": True, "message": "hi", "data": {}}
        assert device.journal.executions("t1") == 1
        assert (counters.tasks_received, counters.tasks_run) == (3, 1)
        assert (counters.duplicates_ignored, counters.duplicates_answered, counters.events_sent) == (1, 1, 4)

    asyncio.run(scenario())


def test_failure_rate_fails_tasks_and_a_cancel_stops_a_running_one() -> None:
    async def scenario() -> None:
        device, wire, counters = _device(failure_rate=1.0)
        device._route("devices/sim-0000/tasks", json.dumps({"id": "t1", "type": "ping"}).encode(), False)
        await _settle(device)
        assert wire.events()[-1]["event"] == "failed" and wire.events()[-1]["error"]["code"] == "handler_error"
        assert counters.failed == 1
        device._route("devices/sim-0000/tasks", json.dumps({"id": "t2", "type": "sleep",
                                                            "params": {"seconds": 60}}).encode(), False)
        while not any(e["event"] == "started" and e["task_id"] == "t2" for e in wire.events()):
            await asyncio.sleep(0.01)
        device._route("devices/sim-0000/tasks", json.dumps({"type": "cancel", "params": {"task_id": "t2"}}).encode(),
                      False)
        await _settle(device)
        assert wire.events()[-1]["event"] == "canceled" and wire.events()[-1]["task_id"] == "t2"

    asyncio.run(scenario())


def test_a_stale_will_on_the_own_topic_is_answered_with_one_new_birth() -> None:
    async def scenario() -> None:
        device, wire, _counters = _device()
        device._session = 2
        stale = {"device_id": "sim-0000", "state": "offline", "session_id": f"{device._boot_id}-1",
                 "reason": "connection lost"}
        for _ in range(2):
            device._route("devices/sim-0000/status", json.dumps(stale).encode(), False)
        await _settle(device)
        births = [p for t, p in wire.sent if t == "devices/sim-0000/status"]
        assert len(births) == 1 and births[0]["state"] == "online" and births[0]["session_id"] == device.session_id

    asyncio.run(scenario())


def test_bad_settings_are_one_clear_error() -> None:
    with pytest.raises(SimulationError, match="devices must be"):
        SimulatedFleet("mqtt://127.0.0.1:1883", 0)
    with pytest.raises(SimulationError, match="failure rate must be 0–1.*keepalive"):
        SimulatedFleet("mqtt://127.0.0.1:1883", 5, failure_rate=1.5, keepalive=1)
    with pytest.raises(SimulationError, match="MQTT URL must start with"):
        SimulatedFleet("http://127.0.0.1", 5)
    with pytest.raises(SimulationError, match="part 3 of 3 does not fit"):
        SimulatedFleet("mqtt://127.0.0.1:1883", 5, part=(3, 3))
    with pytest.raises(SimulationError, match="part 5 of 6 does not fit 5 devices"):
        FleetPool("mqtt://127.0.0.1:1883", 5, processes=6)
    assert device_ids("sim", 3) == ["sim-0000", "sim-0001", "sim-0002"]
    assert device_ids("pc", 10_001)[-1] == "pc-10000"


def test_the_parts_of_a_fleet_share_its_ids_without_overlap() -> None:
    async def parts() -> list[list[str]]:
        return [SimulatedFleet("mqtt://127.0.0.1:1883", 10, part=(n, 3)).ids for n in range(3)]

    shares = asyncio.run(parts())
    assert [len(share) for share in shares] == [3, 3, 4]
    assert [i for share in shares for i in share] == device_ids("sim", 10)


def test_the_open_file_limit_is_raised_for_the_connections() -> None:
    resource = pytest.importorskip("resource")
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert raise_open_file_limit(10) is None  # far below any limit: nothing to do
    warning = raise_open_file_limit(10**9)
    assert warning is not None and "ulimit -n" in warning
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] >= soft  # never lowered


def test_a_socket_closed_before_the_loop_watched_it_is_not_reported() -> None:
    from device.simulator import _quiet_closed_sockets

    loop = asyncio.new_event_loop()
    reported: list[dict[str, Any]] = []
    loop.default_exception_handler = reported.append  # type: ignore[method-assign]
    try:
        _quiet_closed_sockets(loop, {"message": "x", "exception": OSError(9, "Bad file descriptor")})
        assert reported == []
        _quiet_closed_sockets(loop, {"message": "y", "exception": ValueError("other")})
        assert [context["message"] for context in reported] == ["y"]
    finally:
        loop.close()
