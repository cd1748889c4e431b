"""The session vault: sealing with the operator's key (roundtrip, wrong key, tampering, another
account, no secret in any message), the key file, and the controller's side through the real
REST app (signed backup uploads, metadata, moves that restore the latest backup)."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from controller.services import account_backups, tasks
from device.vault import (
    VaultError,
    VaultKeyMismatch,
    decrypt,
    encrypt,
    generate_key,
    key_text,
    load_key,
    write_key_file,
)
from schemas.common import utcnow
from schemas.events import EventKind
from schemas.vault import HEADER_BYTES, fingerprint, read_header
from tests.services_kit import ADMIN_TOKEN, FakePublisher, event, go_online

SESSION = b'{"cookies": [{"name": "session", "value": "c00kie-value-0123456789"}], "origins": []}'


def seal(key: bytes, account: str = "alice") -> bytes:
    return encrypt(key, SESSION, platform="reference", account=account)


def test_roundtrip_with_a_fresh_nonce_each_time() -> None:
    key = generate_key()
    first, second = seal(key), seal(key)
    assert decrypt(key, first, platform="reference", account="alice") == SESSION
    assert first != second and b"c00kie" not in first  # random nonce; ciphertext only
    assert read_header(first).key_fingerprint == fingerprint(key)


def test_a_wrong_key_is_named_by_fingerprints_and_shows_no_secret() -> None:
    key, other = generate_key(), generate_key()
    with pytest.raises(VaultKeyMismatch) as refused:
        decrypt(other, seal(key), platform="reference", account="alice")
    message = str(refused.value)
    assert f"vault key {fingerprint(key)}" in message and f"this device has vault key {fingerprint(other)}" in message
    for secret in (key.hex(), other.hex(), "c00kie"):
        assert secret not in message


def test_a_tampered_blob_is_refused() -> None:
    key = generate_key()
    blob = bytearray(seal(key))
    for index in (HEADER_BYTES - 1, HEADER_BYTES + 3, len(blob) - 1):  # nonce, ciphertext, tag
        changed = bytearray(blob)
        changed[index] ^= 0x01
        with pytest.raises(VaultError, match="altered"):
            decrypt(key, bytes(changed), platform="reference", account="alice")
    with pytest.raises(VaultError, match="not a fleet session backup"):
        decrypt(key, b"garbage" * 10, platform="reference", account="alice")
    with pytest.raises(VaultError, match="format version 9"):
        decrypt(key, bytes(blob[:8]) + b"\x09" + bytes(blob[9:]), platform="reference", account="alice")


def test_a_blob_opens_only_as_its_own_account_and_platform() -> None:
    key = generate_key()
    with pytest.raises(VaultError, match="another account") as refused:
        decrypt(key, seal(key, "alice"), platform="reference", account="bob")
    assert key.hex() not in str(refused.value)
    with pytest.raises(VaultError, match="another account"):
        decrypt(key, seal(key, "alice"), platform="douyin", account="alice")


def test_key_files(tmp_path: Path) -> None:
    key = generate_key()
    path = tmp_path / "keys" / "vault.key"
    write_key_file(path, key)
    assert load_key(path) == key and path.read_text() == key_text(key)
    if os.name == "posix":
        assert path.stat().st_mode & 0o077 == 0
    with pytest.raises(VaultError, match="never overwritten"):
        write_key_file(path, generate_key())
    assert load_key(path) == key
    with pytest.raises(VaultError, match="fleet vault keygen"):
        load_key(None)
    (tmp_path / "bad.key").write_text("not a key")
    with pytest.raises(VaultError, match="not a vault key file") as refused:
        load_key(tmp_path / "bad.key")
    assert "not a key" not in str(refused.value)


def signed_path(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


def test_backup_upload_metadata_and_a_move_that_restores_it(client: TestClient) -> None:
    sessions: sessionmaker[Session] = client.app.state.sessions  # type: ignore[attr-defined]
    go_online(sessions, "pc-01")
    go_online(sessions, "pc-02")
    assert client.post("/api/v1/accounts", json={"name": "alice", "platform": "reference", "device_id": "pc-01"}).status_code == 201
    assert client.get("/api/v1/accounts/alice/backup").status_code == 404
    task = client.post("/api/v1/accounts/alice/backup").json()
    assert (task["type"], task["device_id"], task["params"]["platform"]) == ("session_backup", "pc-01", "reference")
    link = signed_path(task["params"]["upload_url"])
    key = generate_key()
    blob = seal(key)

    forged = link.rsplit("signature=", 1)[0] + "signature=" + "0" * 64
    assert client.put(forged, content=blob).status_code == 403
    assert client.put(link, content=b"not a vault blob at all, just text....").status_code == 422
    stored = client.put(link, content=blob, headers={"Authorization": ""})  # the signature is the authority
    assert stored.status_code == 201, stored.text
    meta = client.get("/api/v1/accounts/alice/backup").json()
    assert (meta["device_id"], meta["key_fingerprint"], meta["size"], meta["task_id"]) == ("pc-01", fingerprint(key), len(blob), task["id"])
    assert set(meta) == {"account", "platform", "file_id", "size", "sha256", "key_fingerprint", "taken_at", "device_id", "task_id"}

    late = client.post("/api/v1/accounts/alice/backup").json()  # will arrive after the move
    moved = client.post("/api/v1/accounts/alice/move", json={"device_id": "pc-02", "backup_wait": 0})
    assert moved.status_code == 200, moved.text
    answer = moved.json()
    assert (answer["fresh_backup"], answer["from_device"], answer["backup"]["file_id"]) == ("skipped", "pc-01", meta["file_id"])
    restore = client.get(f"/api/v1/tasks/{answer['restore_task_id']}").json()
    assert (restore["type"], restore["device_id"]) == ("session_restore", "pc-02")
    assert restore["params"]["key_fingerprint"] == fingerprint(key) and "/api/v1/files/" in restore["params"]["blob_url"]
    refused = client.put(signed_path(late["params"]["upload_url"]), content=seal(key))
    assert refused.status_code == 409 and "no longer on device 'pc-01'" in refused.json()["detail"]
    assert client.get("/api/v1/accounts/alice/backup").json()["file_id"] == meta["file_id"]
    assert client.post("/api/v1/accounts/alice/move", json={"device_id": "pc-02"}).status_code == 409

    with sessions() as session:
        tasks.record_event(session, "pc-02", event(restore["id"], "pc-02", EventKind.SUCCEEDED, 1,
                                                   result={"logged_in": True, "method": "session_restore"}))
    alice = client.get("/api/v1/accounts/alice").json()
    assert (alice["device_id"], alice["login_status"], alice["last_login_at"]) == ("pc-02", "logged_in", None)

    back = client.patch("/api/v1/accounts/alice", json={"device_id": "pc-01"})  # the PATCH moves the same way
    assert back.status_code == 200 and back.json()["login_status"] == "unknown"
    restores = client.get("/api/v1/tasks", params={"device_id": "pc-01", "type": "session_restore"}).json()
    assert [t["account"] for t in restores["items"]] == ["alice"]
    browser = TestClient(client.app, follow_redirects=False)  # the dashboard's move form, signed in
    browser.get("/login")
    browser.post("/login", data={"token": ADMIN_TOKEN, "csrf_token": browser.cookies["fleet_csrf"]})
    form = browser.post("/accounts/move", data={"name": "alice", "device_id": "pc-02", "csrf_token": browser.cookies["fleet_csrf"]})
    assert form.status_code == 303, form.text
    restores = client.get("/api/v1/tasks", params={"device_id": "pc-02", "type": "session_restore"}).json()
    assert len(restores["items"]) == 2
    assert client.get(f"/api/v1/files/{meta['file_id']}").status_code == 200
    assert client.delete("/api/v1/accounts/alice").status_code == 204  # its backup goes with it
    assert client.get(f"/api/v1/files/{meta['file_id']}").status_code == 404


def test_backup_after_login_asks_once_per_login(client: TestClient) -> None:
    sessions: sessionmaker[Session] = client.app.state.sessions  # type: ignore[attr-defined]
    go_online(sessions, "pc-01")
    client.post("/api/v1/accounts", json={"name": "alice", "platform": "reference", "device_id": "pc-01"})
    client.post("/api/v1/accounts", json={"name": "bob", "platform": "reference", "device_id": "pc-01"})
    login = client.post("/api/v1/tasks", json={"account": "alice", "type": "login", "params": {"platform": "reference"}}).json()
    with sessions() as session:
        tasks.record_event(session, "pc-01", event(login["id"], "pc-01", EventKind.SUCCEEDED, 1, result={"logged_in": True}))
    publisher = FakePublisher()
    job = account_backups.BackupAfterLogin(publisher, "http://controller:8080", b"k" * 32)

    def backups() -> list[dict[str, str]]:
        listed = client.get("/api/v1/tasks", params={"type": "session_backup"}).json()["items"]
        return [{"account": t["account"], "device_id": t["device_id"]} for t in listed]

    for _sweep in range(3):  # once per login, however many sweeps
        with sessions() as session:
            job(session, utcnow())
    assert backups() == [{"account": "alice", "device_id": "pc-01"}]  # bob never logged in
    [(topic, envelope)] = publisher.sent
    assert topic == "devices/pc-01/tasks" and envelope.type == "session_backup"
    assert envelope.params["upload_url"].startswith("http://controller:8080/api/v1/backups/")


def test_a_move_without_a_backup_says_it_needs_a_login(client: TestClient) -> None:
    sessions: sessionmaker[Session] = client.app.state.sessions  # type: ignore[attr-defined]
    go_online(sessions, "pc-01")
    go_online(sessions, "pc-02")
    client.post("/api/v1/accounts", json={"name": "carol", "platform": "reference", "device_id": "pc-01"})
    answer = client.post("/api/v1/accounts/carol/move", json={"device_id": "pc-02", "backup_wait": 0}).json()
    assert answer["backup"] is None and answer["restore_task_id"] is None and "needs a login" in answer["message"]
    assert client.post("/api/v1/accounts/carol/move", json={"device_id": "pc-09"}).status_code == 404
    assert client.post("/api/v1/accounts/nobody/move", json={"device_id": "pc-01"}).status_code == 404
