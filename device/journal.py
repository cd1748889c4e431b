"""The device's local journal (SQLite): which task ids it has seen, their state and final event.

It is what makes a redelivered task id never run twice: a task is claimed before it runs,
and its final event is stored before it is published, so a later delivery of the same id is
answered with the recorded outcome. `executions` logs every handler start (append-only).

Rows are keyed by run: attempt 1 of a task by its id, a retry by `<id>#<attempt>` (`#` is not
allowed in task ids), so each attempt the controller sends runs once.
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from pathlib import Path

from schemas.common import utcnow
from schemas.events import TaskEvent

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    id TEXT PRIMARY KEY,
    type TEXT,
    account TEXT,
    state TEXT NOT NULL,
    last_seq INTEGER NOT NULL DEFAULT 0,
    final_event TEXT,
    received_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS executions (
    task_id TEXT NOT NULL,
    started_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS executions_task_id ON executions (task_id);
CREATE TABLE IF NOT EXISTS nonces (
    nonce TEXT PRIMARY KEY,
    seen_at TEXT NOT NULL
);
"""
NONCE_MEMORY = 3600  # seconds a signed task's nonce is remembered (signatures expire much sooner)


class TaskState(StrEnum):
    ACCEPTED = "accepted"  # claimed, waiting for a slot
    STARTED = "started"  # the handler was started
    FINAL = "final"  # the final event is recorded


class ClaimStatus(StrEnum):
    NEW = "new"  # first delivery: run it
    IN_PROGRESS = "in_progress"  # already accepted or running
    FINAL = "final"  # already finished: answer with the recorded event


@dataclass(frozen=True)
class ClaimResult:
    status: ClaimStatus
    state: TaskState
    final_event: TaskEvent | None = None


@dataclass(frozen=True)
class RunRef:
    """One attempt of a task: what the journal keys and every event names."""

    task_id: str
    attempt: int = 1

    @property
    def key(self) -> str:
        return self.task_id if self.attempt == 1 else f"{self.task_id}#{self.attempt}"

    @classmethod
    def from_key(cls, key: str) -> "RunRef":
        task_id, sep, attempt = key.partition("#")
        return cls(task_id, int(attempt) if sep else 1)


@dataclass(frozen=True)
class JournalEntry:
    run: RunRef
    type: str | None
    account: str | None
    state: TaskState
    last_seq: int


def journal_path(data_dir: Path, device_id: str) -> Path:
    return Path(data_dir) / f"journal-{device_id}.sqlite3"


class Journal:
    """Thread-safe (one lock around one connection); every call is one committed transaction."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL survives a killed process
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def claim(self, key: str, task_type: str, account: str | None) -> ClaimResult:
        """Record a delivered run (see `RunRef.key`); NEW only for its first delivery."""
        now = utcnow().isoformat()
        with self._lock:
            inserted = self._db.execute(
                "INSERT INTO tasks (id, type, account, state, received_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (id) DO NOTHING",
                (key, task_type, account, TaskState.ACCEPTED, now, now),
            ).rowcount
            if inserted:
                return ClaimResult(ClaimStatus.NEW, TaskState.ACCEPTED)
            state, final_event = self._db.execute(
                "SELECT state, final_event FROM tasks WHERE id = ?", (key,)
            ).fetchone()
        if state == TaskState.FINAL:
            return ClaimResult(ClaimStatus.FINAL, TaskState.FINAL, TaskEvent.model_validate_json(final_event))
        return ClaimResult(ClaimStatus.IN_PROGRESS, TaskState(state))

    def next_seq(self, key: str) -> int:
        """The next event number of a run (1, 2, …); 1 for a run not in the journal."""
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            row = self._db.execute("SELECT last_seq FROM tasks WHERE id = ?", (key,)).fetchone()
            if row is None:
                return 1
            seq = int(row[0]) + 1
            self._db.execute(
                "UPDATE tasks SET last_seq = ?, updated_at = ? WHERE id = ?", (seq, utcnow().isoformat(), key)
            )
            return seq

    def mark_started(self, key: str) -> None:
        """The handler is about to run: state `started` and one more `executions` row."""
        now = utcnow().isoformat()
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute(
                "UPDATE tasks SET state = ?, updated_at = ? WHERE id = ?", (TaskState.STARTED, now, key)
            )
            self._db.execute("INSERT INTO executions (task_id, started_at) VALUES (?, ?)", (key, now))

    def finish(self, key: str, event: TaskEvent) -> None:
        """Record the final event of a run (creating the entry for a run never delivered)."""
        now = utcnow().isoformat()
        with self._lock:
            self._db.execute(
                "INSERT INTO tasks (id, state, last_seq, final_event, received_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (id) DO UPDATE SET state = excluded.state, final_event = excluded.final_event,"
                " last_seq = max(last_seq, excluded.last_seq), updated_at = excluded.updated_at",
                (key, TaskState.FINAL, event.seq, event.model_dump_json(), now, now),
            )

    def get(self, key: str) -> JournalEntry | None:
        with self._lock:
            row = self._db.execute(
                "SELECT id, type, account, state, last_seq FROM tasks WHERE id = ?", (key,)
            ).fetchone()
        return _entry(row) if row else None

    def unfinished(self) -> list[JournalEntry]:
        """Tasks accepted or started but never finished (left by a process that died)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, type, account, state, last_seq FROM tasks WHERE state != ? ORDER BY received_at, id",
                (TaskState.FINAL,),
            ).fetchall()
        return [_entry(row) for row in rows]

    def remember_nonce(self, nonce: str) -> bool:
        """Record a signed task's nonce; False when it was seen before."""
        now = utcnow()
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("DELETE FROM nonces WHERE seen_at < ?", ((now - timedelta(seconds=NONCE_MEMORY)).isoformat(),))
            inserted = self._db.execute(
                "INSERT INTO nonces (nonce, seen_at) VALUES (?, ?) ON CONFLICT (nonce) DO NOTHING", (nonce, now.isoformat())
            ).rowcount
        return bool(inserted)

    def execution_count(self, key: str) -> int:
        """How many times a handler was started for this run (0 or 1 unless a bug)."""
        with self._lock:
            (count,) = self._db.execute("SELECT count(*) FROM executions WHERE task_id = ?", (key,)).fetchone()
        return int(count)


def _entry(row: tuple[str, str | None, str | None, str, int]) -> JournalEntry:
    key, task_type, account, state, last_seq = row
    return JournalEntry(RunRef.from_key(key), task_type, account, TaskState(state), int(last_seq))
