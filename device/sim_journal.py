"""The in-memory journal of one simulated device: the same semantics as `device.journal`, no file.

A run is keyed like the daemon's journal (`<id>` for attempt 1, `<id>#<attempt>` for a retry).
The first delivery of a run claims it; a repeat while it runs is ignored; a repeat after it
finished is answered with the recorded final event (`replay: true`), never run again. Event
numbers (`seq`) count up per run from 1, replays included, exactly as the daemon's do.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from schemas.events import TaskEvent


def run_key(task_id: str, attempt: int) -> str:
    """The journal key of one attempt of a task (`#` is not allowed in task ids)."""
    return task_id if attempt == 1 else f"{task_id}#{attempt}"


class Claim(StrEnum):
    NEW = "new"  # first delivery: run it
    IN_PROGRESS = "in_progress"  # delivered again while it runs: ignore
    FINAL = "final"  # delivered again after it finished: answer with the recorded event


@dataclass
class _Entry:
    last_seq: int = 0
    final: TaskEvent | None = None
    executions: int = 0


class MemoryJournal:
    """Which runs a simulated device has seen, their last event number and final event."""

    def __init__(self) -> None:
        self._runs: dict[str, _Entry] = {}

    def claim(self, key: str) -> tuple[Claim, TaskEvent | None]:
        """Record a delivered run; NEW only for its first delivery, FINAL with the recorded event."""
        entry = self._runs.get(key)
        if entry is None:
            self._runs[key] = _Entry()
            return Claim.NEW, None
        if entry.final is not None:
            return Claim.FINAL, entry.final
        return Claim.IN_PROGRESS, None

    def next_seq(self, key: str) -> int:
        """The next event number of a run (1, 2, …); 1 for a run never claimed."""
        entry = self._runs.get(key)
        if entry is None:
            return 1
        entry.last_seq += 1
        return entry.last_seq

    def mark_started(self, key: str) -> None:
        self._runs.setdefault(key, _Entry()).executions += 1

    def finish(self, key: str, event: TaskEvent) -> None:
        """Record the final event of a run (before it is published)."""
        entry = self._runs.setdefault(key, _Entry())
        entry.final = event
        entry.last_seq = max(entry.last_seq, event.seq)

    def finished(self, key: str) -> bool:
        entry = self._runs.get(key)
        return entry is not None and entry.final is not None

    def executions(self, key: str) -> int:
        """How many times the run was started (0 or 1: the promise the tests check)."""
        entry = self._runs.get(key)
        return 0 if entry is None else entry.executions

    def __len__(self) -> int:
        return len(self._runs)
