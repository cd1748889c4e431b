"""REST and SQLite concurrency (docs/architecture.md#rest-and-sqlite-concurrency), on a real
SQLite file: reads never wait for the write lock, read sessions refuse to write, a request
checks its API token once (and not again for a few seconds unless it is revoked), and a failed
POST leaves no write lock behind."""

from __future__ import annotations

import socket
import sqlite3
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, event, select, update
from sqlalchemy.orm import Session, sessionmaker

from config import FleetSettings
from controller.api.security import VerifiedTokens
from controller.app import create_app
from controller.db import ReadOnlySessionError, create_read_sessionmaker
from controller.models import ApiToken
from schemas.common import utcnow

ADMIN_TOKEN = "test-admin-token-0123456789abcdef"


def _unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def database(tmp_path: Path) -> Path:
    return tmp_path / "data" / "controller.db"


@pytest.fixture
def client(tmp_path: Path, database: Path) -> Iterator[TestClient]:
    settings = FleetSettings(
        data_dir=tmp_path / "data", database_url=f"sqlite:///{database}",
        mqtt_url=f"mqtt://127.0.0.1:{_unused_port()}", reconnect_max_delay=1, admin_token=ADMIN_TOKEN,
    )
    with TestClient(create_app(settings), headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as test_client:
        yield test_client


def _hold_write_lock(database: Path) -> sqlite3.Connection:
    """Another process's writer in the middle of a transaction (busy_timeout 0: it never waits)."""
    holder = sqlite3.connect(database, isolation_level=None, timeout=0)
    holder.execute("BEGIN IMMEDIATE")
    return holder


def test_reads_and_token_checks_never_wait_for_the_write_lock(client: TestClient, database: Path) -> None:
    assert client.get("/api/v1/tasks").status_code == 200  # last_used_at written now, not again for a minute
    holder = _hold_write_lock(database)  # a write session would now wait up to busy_timeout (30 s)
    try:
        for path in ("/api/v1/tasks", "/api/v1/devices", "/api/v1/tokens", "/healthz"):
            assert client.get(path).status_code == 200, path
    finally:
        holder.rollback()
        holder.close()


def test_a_read_session_refuses_to_write(engine: Engine, sessions: sessionmaker[Session]) -> None:
    read = create_read_sessionmaker(sessions)
    with read() as session:
        assert session.scalars(select(ApiToken)).all() == []
        session.add(ApiToken(id="t1", name="x", scope="read", secret_sha256="0" * 64, created_at=utcnow()))
        with pytest.raises(ReadOnlySessionError, match="read-only"):
            session.flush()
    with read() as session, pytest.raises(ReadOnlySessionError):
        session.execute(update(ApiToken).values(name="y"))
    begins: list[str] = []
    event.listen(engine, "before_cursor_execute",
                 lambda _c, _cur, statement, *_a: begins.append(statement) if statement.startswith("BEGIN") else None)
    with read() as session:
        session.scalars(select(ApiToken)).all()
    with sessions() as session:
        session.scalars(select(ApiToken)).all()
    assert begins == ["BEGIN", "BEGIN IMMEDIATE"]


def test_a_post_checks_its_token_once_and_a_failed_one_holds_no_lock(client: TestClient, database: Path) -> None:
    engine = client.app.state.engine  # type: ignore[attr-defined]
    secret = client.post("/api/v1/tokens", json={"name": "ci", "scope": "operate"}).json()["token"]
    operator = {"Authorization": f"Bearer {secret}"}
    assert client.get("/api/v1/tasks", headers=operator).status_code == 200  # last_used_at: fresh for a minute
    client.app.state.verified_tokens.forget(secret.split("_")[1])  # type: ignore[attr-defined]
    lookups: list[str] = []
    event.listen(engine, "before_cursor_execute",
                 lambda _c, _cur, statement, *_a: lookups.append(statement) if "FROM api_tokens" in statement else None)
    missing = client.post("/api/v1/tasks", json={"device_id": "pc-nowhere", "type": "ping"}, headers=operator)
    assert missing.status_code == 404
    assert len(lookups) == 1, lookups  # the guard's check, reused by the Read and Operate scopes
    holder = _hold_write_lock(database)  # fails at once if the 404's transaction were still open
    holder.rollback()
    holder.close()


def test_a_token_verified_moments_ago_is_not_read_again_until_revoked(client: TestClient) -> None:
    engine = client.app.state.engine  # type: ignore[attr-defined]
    created = client.post("/api/v1/tokens", json={"name": "ci", "scope": "operate"}).json()
    operator = {"Authorization": f"Bearer {created['token']}"}
    assert client.get("/api/v1/tasks", headers=operator).status_code == 200
    lookups: list[str] = []
    event.listen(engine, "before_cursor_execute",
                 lambda _c, _cur, statement, *_a: lookups.append(statement) if "api_tokens" in statement else None)
    for _ in range(3):
        assert client.post("/api/v1/tasks", json={"device_id": "pc-nowhere", "type": "ping"}, headers=operator).status_code == 404
        assert client.get("/api/v1/tasks", headers=operator).status_code == 200
    assert lookups == []
    assert client.delete(f"/api/v1/tokens/{created['id']}").status_code == 200
    refused = client.post("/api/v1/tasks", json={"device_id": "pc-nowhere", "type": "ping"}, headers=operator)
    assert refused.status_code == 401, refused.text  # revoked: refused from the very next request
    assert client.get("/api/v1/tasks", headers=operator).status_code == 401


def test_a_remembered_token_is_refused_once_it_expires_or_its_time_is_up() -> None:
    verified = VerifiedTokens(ttl=60)
    token = ApiToken(id="t1", name="x", scope="read", secret_sha256="0" * 64, created_at=utcnow(),
                     expires_at=utcnow() + timedelta(hours=1))
    verified.put("flt_t1_secret", token)
    assert verified.get("flt_t1_secret") is token
    assert verified.get("flt_t1_other") is None
    token.expires_at = utcnow() - timedelta(seconds=1)
    assert verified.get("flt_t1_secret") is None
    short = VerifiedTokens(ttl=0)
    short.put("flt_t1_secret", ApiToken(id="t1", name="x", scope="read", secret_sha256="0" * 64, created_at=utcnow()))
    assert short.get("flt_t1_secret") is None  # past its time: verified against the database again


def test_every_request_gives_its_connection_back(client: TestClient) -> None:
    """Sessions are opened and closed by async dependencies; a failed route's is closed too."""
    engine = client.app.state.engine  # type: ignore[attr-defined]
    assert client.get("/api/v1/tasks").status_code == 200
    assert client.get("/api/v1/tasks/no-such-task").status_code == 404
    assert client.post("/api/v1/tasks", json={"device_id": "pc-nowhere", "type": "ping"}).status_code == 404
    assert client.post("/api/v1/tasks/no-such-task/cancel").status_code == 404
    assert engine.pool.checkedout() == 0
