"""`fleet watch`'s lines: one readable line per stream event kind, and a clear refusal of an
unknown `--kind` (exit 2, no request sent)."""

from __future__ import annotations

import pytest
import typer

from cli.watch import _params, line
from schemas.live import AlertNotice, Dropped, LoadReport, PresenceChange, TaskChange, TaskEventNotice


def test_each_kind_has_a_readable_line() -> None:
    lines = [line(event.model_dump(mode="json")) for event in (
        TaskChange(task_id="0123456789abcdef", device_id="pc-01", type="sleep", status="running", progress=40),
        TaskEventNotice(task_id="0123456789abcdef", device_id="pc-01", event="progress", progress=40, message="step 2",
                        details={"waiting_for": "code"}),
        PresenceChange(device_id="pc-01", status="offline", reason="silent"),
        LoadReport(device_id="pc-01", metrics={"cpu_percent": 12.0, "memory_percent": 50.0, "disk_free_bytes": 2_000_000_000}),
        AlertNotice(rule="device_offline", message="pc-01 offline for 5 min", device_id="pc-01"),
        Dropped(count=7),
    )]
    assert lines[0].endswith("task   0123456789ab sleep on pc-01: running 40%")
    assert lines[1].endswith('event  0123456789ab #1 progress 40% step 2 details: {"waiting_for": "code"}')
    assert lines[2].endswith("device pc-01 offline (silent)")
    assert lines[3].endswith("load   pc-01 cpu 12% mem 50% disk 2.0 GB free")
    assert lines[4].endswith("ALERT  device_offline: pc-01 offline for 5 min device_id=pc-01")
    assert "dropped 7 events" in lines[5]
    assert line({"kind": "future", "x": 1}).strip() == '{"kind": "future", "x": 1}'


def test_an_unknown_kind_is_refused_before_connecting() -> None:
    assert _params(["task", "presence"], ["pc-01"], []) == {"kinds": "task,presence", "device": "pc-01"}
    with pytest.raises(typer.Exit) as exited:
        _params(["tasks"], [], [])
    assert exited.value.exit_code == 2
