"""The REST side of issue 14 through `create_app` on real SQLite databases: the
`Idempotency-Key` header and its replay header, and FLEET_FILE_STORE=database (pieces in SQL,
ranges, a link key shared through the database so a link from one controller works on another)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from config.settings import FleetSettings
from controller.app import create_app
from controller.models import FileChunk
from controller.services import file_store
from tests.services_kit import ADMIN_TOKEN, go_online, unused_port


def app_client(tmp_path: Path, data: str, database: Path, **settings: object) -> TestClient:
    values = FleetSettings(
        data_dir=tmp_path / data, database_url=f"sqlite:///{database}", mqtt_url=f"mqtt://127.0.0.1:{unused_port()}",
        reconnect_max_delay=1, admin_token=ADMIN_TOKEN, **settings,  # type: ignore[arg-type]
    )
    return TestClient(create_app(values), headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})


@pytest.fixture
def two(tmp_path: Path) -> Iterator[tuple[TestClient, TestClient]]:
    """Two controllers (own data dirs, no FLEET_FILE_URL_KEY) on one database, database file store."""
    database = tmp_path / "shared.db"
    with app_client(tmp_path, "a", database, file_store="database") as a, \
            app_client(tmp_path, "b", database, file_store="database") as b:
        yield a, b


def test_idempotency_key_header(client: TestClient) -> None:
    sessions: sessionmaker[Session] = client.app.state.sessions  # type: ignore[attr-defined]
    go_online(sessions, "pc-01")
    body = {"device_id": "pc-01", "type": "echo", "params": {"message": "hi"}}
    first = client.post("/api/v1/tasks", json=body, headers={"Idempotency-Key": "k-1"})
    again = client.post("/api/v1/tasks", json=body, headers={"Idempotency-Key": "k-1"})
    assert first.status_code == again.status_code == 201 and again.json() == first.json()
    assert "idempotent-replayed" not in first.headers and again.headers["Idempotent-Replayed"] == "true"
    other = client.post("/api/v1/tasks", json={**body, "params": {"message": "bye"}}, headers={"Idempotency-Key": "k-1"})
    assert other.status_code == 422 and "already used" in other.json()["detail"]
    bad = client.post("/api/v1/tasks", json=body, headers={"Idempotency-Key": "has space"})
    assert bad.status_code == 422 and "Idempotency-Key" in bad.text
    mine = client.post("/api/v1/tasks", json={**body, "id": "mine-1"})
    assert client.post("/api/v1/tasks", json={**body, "id": "mine-1"}).headers["Idempotent-Replayed"] == "true"
    clash = client.post("/api/v1/tasks", json={**body, "id": "mine-1", "type": "ping", "params": {}})
    assert mine.status_code == 201 and clash.status_code == 409 and "mine-1" in clash.json()["detail"]
    batch = {"tasks": [body, body]}
    one = client.post("/api/v1/tasks/batch", json=batch, headers={"Idempotency-Key": "k-1"})
    two = client.post("/api/v1/tasks/batch", json=batch, headers={"Idempotency-Key": "k-1"})
    assert one.status_code == 201 and two.json() == one.json() and two.headers["Idempotent-Replayed"] == "true"
    cast = client.post("/api/v1/broadcasts", json={"type": "ping"}, headers={"Idempotency-Key": "k-1"})
    recast = client.post("/api/v1/broadcasts", json={"type": "ping"}, headers={"Idempotency-Key": "k-1"})
    assert cast.status_code == 201 and recast.json() == cast.json() and recast.headers["Idempotent-Replayed"] == "true"
    assert client.get("/api/v1/tasks").json()["total"] == 1 + 1 + 2 + 1


def test_database_store_serves_through_another_controller(two: tuple[TestClient, TestClient]) -> None:
    a, b = two
    content = os.urandom(2 * file_store.CHUNK_BYTES + 12_345)  # three pieces, the last one short
    stored = a.post("/api/v1/files", params={"name": "clip ü.mp4"}, content=content, headers={"content-type": "video/mp4"})
    assert stored.status_code == 201, stored.text
    info = stored.json()
    assert (info["size"], info["sha256"]) == (len(content), hashlib.sha256(content).hexdigest())
    with a.app.state.sessions() as session:  # type: ignore[attr-defined]
        assert session.scalar(select(func.count()).select_from(FileChunk)) == 3
    device = TestClient(b.app)  # no token: the link signed by A is the credential on B
    whole = device.get(info["url"])
    assert whole.status_code == 200 and whole.content == content and whole.headers["accept-ranges"] == "bytes"
    assert "filename*=utf-8''clip%20%C3%BC.mp4" in whole.headers["content-disposition"]
    start = file_store.CHUNK_BYTES - 10  # across a piece boundary, to the end
    tail = device.get(info["url"], headers={"Range": f"bytes={start}-"})
    assert tail.status_code == 206 and tail.content == content[start:]
    assert tail.headers["content-range"] == f"bytes {start}-{len(content) - 1}/{len(content)}"
    middle = device.get(info["url"], headers={"Range": "bytes=5-9"})
    assert middle.status_code == 206 and middle.content == content[5:10]
    assert device.get(info["url"], headers={"Range": "bytes=-4"}).content == content[-4:]
    past = device.get(info["url"], headers={"Range": f"bytes={len(content)}-"})
    assert past.status_code == 416 and past.headers["content-range"] == f"bytes */{len(content)}"
    assert b.delete(f"/api/v1/files/{info['id']}").status_code == 204
    assert device.get(info["url"]).status_code == 404
    with a.app.state.sessions() as session:  # type: ignore[attr-defined]
        assert session.scalar(select(func.count()).select_from(FileChunk)) == 0


def test_database_store_empty_and_too_large(tmp_path: Path) -> None:
    with app_client(tmp_path, "a", tmp_path / "db.sqlite", file_store="database", max_upload_bytes=2048) as a:
        empty = a.post("/api/v1/files", params={"name": "e"}, content=b"").json()
        got = a.get(f"/api/v1/files/{empty['id']}")
        assert got.status_code == 200 and got.content == b""
        too_big = a.post("/api/v1/files", params={"name": "big"}, content=b"x" * 4096)
        assert too_big.status_code == 413
        with a.app.state.sessions() as session:  # type: ignore[attr-defined]
            assert session.scalar(select(func.count()).select_from(FileChunk)) == 0, "a refused upload leaves nothing"


def test_a_local_file_asked_of_another_controller_is_a_clear_404(tmp_path: Path) -> None:
    database = tmp_path / "shared.db"
    with app_client(tmp_path, "a", database, file_url_key="k" * 32) as a, \
            app_client(tmp_path, "b", database, file_url_key="k" * 32) as b:
        info = a.post("/api/v1/files", params={"name": "x"}, content=b"abc").json()
        assert a.get(f"/api/v1/files/{info['id']}").content == b"abc"
        there = b.get(f"/api/v1/files/{info['id']}")
        assert there.status_code == 404 and "FLEET_FILE_STORE=database" in there.json()["detail"]


@pytest.mark.parametrize(("header", "expected"), [
    (None, None), ("bytes=0-", (0, 99)), ("bytes=10-19", (10, 19)), ("bytes=90-200", (90, 99)), ("bytes=-5", (95, 99)),
    ("bytes=-500", (0, 99)), ("bytes=5-3", None), ("bytes=0-1,5-6", None), ("items=0-1", None), ("bytes=-", None),
])
def test_byte_range(header: str | None, expected: tuple[int, int] | None) -> None:
    assert file_store.byte_range(header, 100) == expected


@pytest.mark.parametrize("header", ["bytes=100-", "bytes=-0"])
def test_byte_range_not_satisfiable(header: str) -> None:
    with pytest.raises(file_store.RangeNotSatisfiableError):
        file_store.byte_range(header, 100)
