"""The device's journal on a real SQLite file, without a broker: claims, recorded final events,
reopening, and ids recorded final before they were ever delivered.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from device.journal import ClaimStatus, Journal, TaskState, journal_path
from schemas.common import utcnow
from schemas.events import EventKind, TaskEvent
from tests.unit.device_kit import DEVICE


def event(task_id: str, kind: EventKind, seq: int, **fields: Any) -> TaskEvent:
    return TaskEvent(task_id=task_id, device_id=DEVICE, event=kind, seq=seq, at=utcnow(), session_id="s-1", **fields)


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
