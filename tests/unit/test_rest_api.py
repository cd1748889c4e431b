"""REST checks through `create_app` on a real SQLite database (its broker does not exist):
clear 4xx errors, the task lifecycle, accounts, files, tokens and scopes, size limits and
task signing.
"""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from config.settings import FleetSettings
from controller.app import create_app
from controller.services import tasks
from schemas.events import EventKind
from tests.services_kit import ADMIN_TOKEN, event, go_online, unused_port


def test_rest_errors_are_clear_4xx(client: TestClient) -> None:
    health = client.get("/healthz").json()
    assert (health["database"], health["mqtt_connected"], health["status"]) == (True, False, "degraded")
    assert "/api/v1/tasks/{task_id}/cancel" in client.get("/openapi.json").json()["paths"]

    missing = client.post("/api/v1/tasks", json={"device_id": "pc-01", "params": {"password": "s3cret"}})
    assert missing.status_code == 422
    assert ["body", "type"] in [err["loc"] for err in missing.json()["detail"]]
    assert "s3cret" not in missing.text

    unknown = client.post("/api/v1/tasks", json={"device_id": "pc-01", "type": "ping"})
    assert unknown.status_code == 404 and "first connection" in unknown.json()["detail"]
    assert client.get("/api/v1/devices/pc-01").status_code == 404
    assert client.get("/api/v1/tasks/nope").json() == {"detail": "task 'nope' does not exist; list tasks with GET /api/v1/tasks"}
    assert client.get("/api/v1/tasks", params={"status": "bogus"}).status_code == 422
    assert client.get("/api/v1/devices", params={"limit": 0}).status_code == 422


def test_rest_task_lifecycle(client: TestClient) -> None:
    sessions: sessionmaker[Session] = client.app.state.sessions  # type: ignore[attr-defined]
    go_online(sessions, "pc-01", groups=["lab"])
    assert client.get("/api/v1/devices", params={"group": "lab"}).json()["total"] == 1
    assert client.get("/api/v1/devices/pc-01/connections").json()[0]["state"] == "online"

    bad = client.post(
        "/api/v1/tasks", json={"device_id": "pc-01", "type": "chat", "params": {"platform": "x", "to": "bob", "token": "s3cret"}}
    )
    assert bad.status_code == 422 and "params.message" in bad.json()["detail"] and "s3cret" not in bad.text

    created = client.post("/api/v1/tasks", json={"device_id": "pc-01", "type": "echo", "params": {"message": "hi"}})
    assert created.status_code == 201
    task = created.json()
    assert task["status"] == "queued", "the broker is down: the task waits for the device's next birth"

    with sessions() as session:
        tasks.record_event(session, "pc-01", event(task["id"], "pc-01", EventKind.SUCCEEDED, 0, result={"message": "hi"}))
    detail = client.get(f"/api/v1/tasks/{task['id']}").json()
    assert detail["status"] == "succeeded" and [e["event"] for e in detail["events"]] == ["succeeded"]
    assert client.post(f"/api/v1/tasks/{task['id']}/cancel").status_code == 409

    second = client.post("/api/v1/tasks", json={"device_id": "pc-01", "type": "ping"}).json()
    canceled = client.post(f"/api/v1/tasks/{second['id']}/cancel")
    assert canceled.status_code == 202 and canceled.json()["status"] == "canceled"
    page = client.get("/api/v1/tasks", params={"device_id": "pc-01"}).json()
    assert [t["id"] for t in page["items"]] == [second["id"], task["id"]] and page["total"] == 2

    broadcast = client.post("/api/v1/broadcasts", json={"type": "ping", "group": "lab"})
    assert broadcast.status_code == 201
    body = broadcast.json()
    assert body["task_ids"] == [f"{body['id']}:pc-01"]
    assert client.get(f"/api/v1/broadcasts/{body['id']}").json()["status_counts"] == {"queued": 1}
    assert client.get("/api/v1/broadcasts/nope").status_code == 404


def test_accounts_route_tasks_and_follow_login_outcomes(client: TestClient) -> None:
    sessions: sessionmaker[Session] = client.app.state.sessions  # type: ignore[attr-defined]
    go_online(sessions, "pc-01", task_types=["login", "chat"])
    go_online(sessions, "pc-02")
    unbound = client.post("/api/v1/tasks", json={"account": "alice", "type": "ping"})
    assert unbound.status_code == 422 and "not bound to a device" in unbound.json()["detail"]
    assert client.post("/api/v1/accounts", json={"name": "alice", "platform": "reference", "device_id": "pc-09"}).status_code == 404
    created = client.post("/api/v1/accounts", json={"name": "alice", "platform": "reference", "device_id": "pc-01"})
    assert created.status_code == 201 and created.json()["login_status"] == "unknown"
    assert client.post("/api/v1/accounts", json={"name": "alice", "platform": "x", "device_id": "pc-01"}).status_code == 409

    login = client.post("/api/v1/tasks", json={"account": "alice", "type": "login", "params": {"platform": "reference"}})
    assert login.status_code == 201 and login.json()["device_id"] == "pc-01"  # routed by the account
    login_id = login.json()["id"]
    with sessions() as session:
        tasks.record_event(session, "pc-01", event(login_id, "pc-01", EventKind.SUCCEEDED, 1,
                                                   result={"logged_in": True, "account_name": "Alice A."}))
    alice = client.get("/api/v1/accounts/alice").json()
    assert (alice["login_status"], alice["display_name"], alice["status_task_id"]) == ("logged_in", "Alice A.", login_id)
    assert alice["last_login_at"] is not None

    chat = client.post("/api/v1/tasks", json={
        "account": "alice", "type": "chat", "params": {"platform": "reference", "to": "bob", "message": "hi"},
    }).json()
    with sessions() as session:
        tasks.record_event(session, "pc-01", event(chat["id"], "pc-01", EventKind.FAILED, 1,
                                                   error={"code": "not_logged_in", "message": "log in first"}))
    assert client.get("/api/v1/accounts/alice").json()["login_status"] == "expired"
    assert [a["name"] for a in client.get("/api/v1/accounts", params={"login_status": "expired"}).json()] == ["alice"]

    moved = client.patch("/api/v1/accounts/alice", json={"device_id": "pc-02"}).json()
    assert (moved["device_id"], moved["login_status"]) == ("pc-02", "unknown")
    assert client.delete("/api/v1/accounts/alice").status_code == 204
    assert client.get("/api/v1/accounts/alice").status_code == 404


def test_files_upload_hash_and_ranged_download(client: TestClient) -> None:
    import hashlib
    import os

    body = os.urandom(300_000)
    stored = client.post("/api/v1/files", params={"name": "clip.mp4"}, content=body,
                         headers={"content-type": "video/mp4"})
    assert stored.status_code == 201, stored.text
    info = stored.json()
    assert (info["size"], info["sha256"], info["name"]) == (len(body), hashlib.sha256(body).hexdigest(), "clip.mp4")
    assert f"/api/v1/files/{info['id']}/download?expires=" in info["url"]

    whole = client.get(f"/api/v1/files/{info['id']}")
    assert whole.status_code == 200 and whole.content == body
    device = TestClient(client.app)  # no API token: the signed link is the credential
    tail = device.get(info["url"], headers={"Range": "bytes=100000-"})
    assert tail.status_code == 206 and tail.content == body[100_000:]
    forged = device.get(info["url"][:-1] + ("0" if info["url"][-1] != "0" else "1"))
    assert forged.status_code == 403 and "signature" in forged.json()["detail"]
    assert device.get(f"/api/v1/files/{info['id']}").status_code == 401
    assert [f["id"] for f in client.get("/api/v1/files").json()] == [info["id"]]
    assert client.delete(f"/api/v1/files/{info['id']}").status_code == 204
    assert client.get(f"/api/v1/files/{info['id']}").status_code == 404


def test_rest_needs_a_token_with_enough_scope(client: TestClient) -> None:
    anonymous = TestClient(client.app)
    assert anonymous.get("/healthz").status_code == 200  # the one open endpoint
    missing = anonymous.get("/api/v1/tasks")
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    assert "fleet token create" in missing.json()["detail"]
    assert anonymous.get("/api/v1/tasks", headers={"Authorization": "Bearer flt_nope_guess"}).status_code == 401

    made = client.post("/api/v1/tokens", json={"name": "viewer", "scope": "read"})
    assert made.status_code == 201
    viewer = {"Authorization": f"Bearer {made.json()['token']}"}
    assert anonymous.get("/api/v1/devices", headers=viewer).status_code == 200
    denied = anonymous.post("/api/v1/broadcasts", headers=viewer, json={"type": "ping"})
    assert denied.status_code == 403 and "'operate'" in denied.json()["detail"]
    assert anonymous.get("/api/v1/tokens", headers=viewer).status_code == 403
    listed = client.get("/api/v1/tokens").json()
    assert {t["name"] for t in listed} == {"FLEET_ADMIN_TOKEN", "viewer"}
    assert all("token" not in t and "secret_sha256" not in t for t in listed)
    assert client.delete(f"/api/v1/tokens/{made.json()['id']}").json()["revoked_at"] is not None
    assert client.delete("/api/v1/tokens/admin0").status_code == 409  # FLEET_ADMIN_TOKEN is retired by config
    assert anonymous.get("/api/v1/devices", headers=viewer).status_code == 401


def test_tasks_larger_than_devices_accept_are_refused_at_creation(client: TestClient) -> None:
    """A task whose message would exceed FLEET_MAX_PAYLOAD_BYTES (256 KiB) gets 413 saying why,
    and nothing is stored or sent: every device would reject it, and a broker with a packet
    limit would drop the controller for publishing it."""
    sessions: sessionmaker[Session] = client.app.state.sessions  # type: ignore[attr-defined]
    go_online(sessions, "pc-01", task_types=["scrape"])  # a custom type: its params are the device's business
    big = {"type": "scrape", "params": {"page": "x" * 300_000}}
    for path, body in (("/api/v1/tasks", {"device_id": "pc-01", **big}), ("/api/v1/broadcasts", big)):
        refused = client.post(path, json=body)
        assert refused.status_code == 413, refused.text
        assert "devices accept at most 262,144 bytes (FLEET_MAX_PAYLOAD_BYTES)" in refused.json()["detail"]
    assert client.get("/api/v1/tasks").json()["total"] == 0
    fits = {"device_id": "pc-01", "type": "scrape", "params": {"page": "x" * 200_000}}
    assert client.post("/api/v1/tasks", json=fits).status_code == 201


def test_oversized_bodies_and_floods_are_refused(client: TestClient) -> None:
    from controller.throttle import DeviceThrottle

    huge = client.post("/api/v1/tasks", content=b"{" + b" " * 2_000_000 + b"}", headers={"content-type": "application/json"})
    assert huge.status_code == 413 and "at most" in huge.json()["detail"]

    now = [0.0]
    throttle = DeviceThrottle(rate=10, burst=3, clock=lambda: now[0])
    assert [throttle.allow("noisy") for _ in range(5)] == [True, True, True, False, False]
    assert throttle.allow("quiet")  # one device's flood does not touch another's budget
    now[0] += 0.2  # two messages' worth of refill
    assert [throttle.allow("noisy") for _ in range(3)] == [True, True, False]


def test_rest_signs_tasks_for_one_topic_with_an_admin_token(client: TestClient, tmp_path: Path) -> None:
    from schemas.signing import problem, trusted_keys
    from schemas.tasks import TaskEnvelope

    off = client.post("/api/v1/signatures", json={"task": {"type": "ping"}, "broadcast": True})
    assert off.status_code == 409 and "FLEET_TASK_SIGNING=true" in off.json()["detail"]
    settings = FleetSettings(
        data_dir=tmp_path / "signing", database_url=f"sqlite:///{tmp_path / 'signing' / 'controller.db'}",
        mqtt_url=f"mqtt://127.0.0.1:{unused_port()}", reconnect_max_delay=1, admin_token=ADMIN_TOKEN, task_signing=True,
    )
    with TestClient(create_app(settings), headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as signing:
        key = signing.get("/api/v1/signatures/key").json()
        trusted = trusted_keys([key["public_key"]])
        made = signing.post("/api/v1/signatures", json={"task": {"id": "t1", "type": "ping"}, "device_id": "pc-01"})
        assert made.status_code == 201
        envelope = TaskEnvelope.model_validate(made.json())
        assert envelope.key_id == key["key_id"] and problem(envelope, trusted, "devices/pc-01/tasks") is None
        assert problem(envelope, trusted, "devices/pc-02/tasks") is not None
        group = signing.post("/api/v1/signatures", json={"task": {"type": "ping"}, "group": "lab"}).json()
        assert group["target"] == "fleet/groups/lab/tasks"
        both = signing.post("/api/v1/signatures", json={"task": {"type": "ping"}, "device_id": "pc-01", "broadcast": True})
        assert both.status_code == 422
        viewer = signing.post("/api/v1/tokens", json={"name": "op", "scope": "operate"}).json()["token"]
        denied = TestClient(signing.app).post("/api/v1/signatures", headers={"Authorization": f"Bearer {viewer}"},
                                             json={"task": {"type": "ping"}, "broadcast": True})
        assert denied.status_code == 403
    assert (tmp_path / "signing" / "task-signing-key.pem").stat().st_mode & 0o077 == 0
