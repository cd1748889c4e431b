"""An amqtt plugin that keeps the embedded broker's retained messages in a SQLite file, so a
restart, even after a crash, does not forget them: the controller and any new subscriber still
find every device's last status. Each change is written at once (Mosquitto saves its state
every 30 minutes and at shutdown, so a crash loses what changed since)."""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from amqtt.broker import RetainedApplicationMessage
from amqtt.plugins.base import BasePlugin

from schemas.errors import BrokerError

log = logging.getLogger(__name__)


class RetainedStoreError(BrokerError):
    """The retained-message file cannot be opened or is not a database of ours."""


def open_store(path: Path) -> sqlite3.Connection:
    """The retained-message database at `path`, created if missing."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, isolation_level=None)  # autocommit: each change is durable at once
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL survives a process crash
        db.execute("CREATE TABLE IF NOT EXISTS retained (topic TEXT PRIMARY KEY, payload BLOB NOT NULL, qos INTEGER NOT NULL)")
        db.execute("SELECT topic, payload, qos FROM retained LIMIT 1").fetchall()
    except (sqlite3.Error, OSError) as exc:
        raise RetainedStoreError(
            f"cannot keep retained messages in {path} ({exc}). Set FLEET_BROKER_RETAINED_FILE to a file "
            "the broker may write, or delete a damaged one: it holds only retained messages, which devices send again."
        ) from None
    return db


class RetainedStore(BasePlugin[Any]):
    """Restores the retained messages before the listeners open, then mirrors every change."""

    @dataclass
    class Config:
        file: str = ""

    def __init__(self, context: Any) -> None:
        super().__init__(context)
        self._path = Path(self.context.config.file)
        self._db = open_store(self._path)

    async def on_broker_pre_start(self) -> None:
        rows = self._db.execute("SELECT topic, payload, qos FROM retained").fetchall()
        for topic, payload, qos in rows:
            self.context.retained_messages[topic] = RetainedApplicationMessage(None, topic, payload, qos)
        log.info("restored %d retained message(s) from %s", len(rows), self._path)

    async def on_broker_retained_message(self, *, client_id: str | None, retained_message: RetainedApplicationMessage) -> None:
        if client_id is not None:
            return  # a message queued for a disconnected session, not a retained one
        if retained_message.data:
            self._db.execute(
                "INSERT INTO retained (topic, payload, qos) VALUES (?, ?, ?) "
                "ON CONFLICT (topic) DO UPDATE SET payload = excluded.payload, qos = excluded.qos",
                (retained_message.topic, bytes(retained_message.data), retained_message.qos or 0),
            )
        else:
            self._db.execute("DELETE FROM retained WHERE topic = ?", (retained_message.topic,))

    async def on_broker_post_shutdown(self) -> None:
        self._db.close()
