"""What the reference site knows: login tokens, sessions, uploaded files, its test switches,
and the records of what it received (kept in `records.json` so tests can read them)."""

from __future__ import annotations

import json
import secrets
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any


def now() -> str:
    return datetime.now(timezone.utc).isoformat()


@dataclass
class LoginToken:
    state: str = "waiting"  # waiting → needs_code → done
    account: str | None = None
    code: str | None = None
    used_code: bool = False


@dataclass
class SiteStore:
    state_dir: Path
    lock: threading.Lock = field(default_factory=threading.Lock)
    tokens: dict[str, LoginToken] = field(default_factory=dict)
    sessions: dict[str, str] = field(default_factory=dict)  # session cookie → account
    files: dict[str, dict[str, Any]] = field(default_factory=dict)  # upload id → path, sha256, size
    sms_required: set[str] = field(default_factory=set)
    fail: dict[str, int] = field(default_factory=dict)  # endpoint name → HTTP status to answer with
    records: dict[str, list[dict[str, Any]]] = field(
        default_factory=lambda: {"logins": [], "uploads": [], "messages": []}
    )

    def __post_init__(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        path = self.state_dir / "records.json"
        if path.exists():
            self.records = json.loads(path.read_text(encoding="utf-8"))

    def record(self, kind: str, entry: dict[str, Any]) -> None:
        with self.lock:
            self.records[kind].append({**entry, "at": now()})
            path = self.state_dir / "records.json"
            temporary = path.with_suffix(".tmp")
            temporary.write_text(json.dumps(self.records, indent=1), encoding="utf-8")
            temporary.replace(path)

    def new_token(self) -> str:
        token = secrets.token_urlsafe(12)
        with self.lock:
            self.tokens[token] = LoginToken()
        return token

    def new_session(self, account: str) -> str:
        session = secrets.token_urlsafe(24)
        with self.lock:
            self.sessions[session] = account
        return session

    def reset(self) -> None:
        with self.lock:
            self.tokens.clear()
            self.sessions.clear()
            self.files.clear()
            self.sms_required.clear()
            self.fail.clear()
            self.records = {"logins": [], "uploads": [], "messages": []}
        (self.state_dir / "records.json").unlink(missing_ok=True)
