"""Batch creation (`task_create.create_tasks`, `POST /api/v1/tasks/batch`, `fleet task
send-batch`) on a real SQLite database, with an in-memory stand-in for the MQTT publish side."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from cli.tasks import app as task_cli
from controller.models import Task
from controller.services import accounts, task_create
from controller.services.task_create import InvalidBatchError
from schemas.api import TASK_BATCH_LIMIT, AccountCreate, TaskCreate
from schemas.events import TaskStatus
from tests.services_kit import FakePublisher, go_online, status_of


def _echo(device_id: str, message: str) -> TaskCreate:
    return TaskCreate(device_id=device_id, type="echo", params={"message": message})


def _task_count(sessions: sessionmaker[Session]) -> int:
    with sessions() as session:
        return int(session.scalar(select(func.count()).select_from(Task)) or 0)


def test_batch_is_committed_then_published_in_order(sessions: sessionmaker[Session]) -> None:
    go_online(sessions, "pc-01")
    go_online(sessions, "pc-02")
    publisher = FakePublisher()
    with sessions() as session:
        accounts.create_account(session, AccountCreate(name="alice", platform="mail", device_id="pc-02"))
    bodies = [_echo("pc-01", "a"), TaskCreate(account="alice", type="ping"), _echo("pc-01", "c")]
    with sessions() as session:
        created = task_create.create_tasks(session, bodies, publisher)
    assert [(t.device_id, t.type, t.origin) for t in created] == [("pc-01", "echo", "api"), ("pc-02", "ping", "api"),
                                                                  ("pc-01", "echo", "api")]
    assert len({t.id for t in created}) == 3
    assert [(topic, envelope.id) for topic, envelope in publisher.sent] == [
        (f"devices/{t.device_id}/tasks", t.id) for t in created
    ]
    assert publisher.sent[1][1].account == "alice"
    assert {status_of(sessions, t.id) for t in created} == {TaskStatus.QUEUED.value}, "dispatched only once acked"
    publisher.ack(sessions)
    assert {status_of(sessions, t.id) for t in created} == {TaskStatus.DISPATCHED.value}


def test_one_wrong_item_refuses_the_whole_batch_and_names_every_wrong_one(sessions: sessionmaker[Session]) -> None:
    go_online(sessions, "pc-01")
    publisher = FakePublisher()
    bodies = [
        _echo("pc-01", "fine"),
        _echo("pc-99", "unknown device"),
        TaskCreate(device_id="pc-01", type="chat", params={"platform": "x", "to": "bob", "token": "s3cret"}),
        TaskCreate(device_id="pc-01", type="mystery"),
        TaskCreate(account="nobody", type="ping"),
        _echo("pc-01", "x" * (publisher.max_payload_bytes + 1)),
    ]
    with sessions() as session, pytest.raises(InvalidBatchError) as refused:
        task_create.create_tasks(session, bodies, publisher)
    detail = refused.value.detail
    assert refused.value.indexes == [1, 2, 3, 4, 5] and refused.value.status_code == 422
    assert detail.startswith("5 of the 6 tasks are invalid, so none was created: tasks[1]: device 'pc-99'")
    for text in ("tasks[2]: invalid params for task type 'chat'", "tasks[3]: task type 'mystery' is not built in",
                 "tasks[4]: account 'nobody' is not bound", "tasks[5]: this task would be a"):
        assert text in detail
    assert "s3cret" not in detail
    assert _task_count(sessions) == 0 and publisher.sent == []


def test_a_refusal_names_at_most_ten_items(sessions: sessionmaker[Session]) -> None:
    bodies = [_echo(f"pc-{n:02d}", "nobody is there") for n in range(25)]
    with sessions() as session, pytest.raises(InvalidBatchError) as refused:
        task_create.create_tasks(session, bodies, FakePublisher())
    assert refused.value.detail.count("tasks[") == 10 and refused.value.detail.endswith("; and 15 more")
    assert len(refused.value.indexes) == 25


def test_rest_batch_creates_each_task_as_a_single_create_would(client: TestClient) -> None:
    sessions: sessionmaker[Session] = client.app.state.sessions  # type: ignore[attr-defined]
    go_online(sessions, "pc-01")
    body = {"tasks": [{"device_id": "pc-01", "type": "echo", "params": {"message": str(n)}, "retries": n % 2}
                      for n in range(5)]}
    response = client.post("/api/v1/tasks/batch", json=body)
    assert response.status_code == 201, response.text
    items = response.json()["items"]
    assert [(i["params"]["message"], i["max_retries"], i["status"]) for i in items] == [
        (str(n), n % 2, "queued") for n in range(5)
    ]
    again = client.post("/api/v1/tasks/batch", json=body).json()["items"]
    assert not {i["id"] for i in items} & {i["id"] for i in again}, "not idempotent: a repeated batch makes new tasks"
    assert client.get(f"/api/v1/tasks/{items[3]['id']}").json()["params"] == {"message": "3"}
    assert client.get("/api/v1/tasks").json()["total"] == 10


def test_rest_batch_errors_say_which_item_and_create_nothing(client: TestClient) -> None:
    sessions: sessionmaker[Session] = client.app.state.sessions  # type: ignore[attr-defined]
    go_online(sessions, "pc-01")
    ok = {"device_id": "pc-01", "type": "ping"}
    shape = client.post("/api/v1/tasks/batch", json={"tasks": [ok, {"device_id": "pc-01", "params": {"pw": "s3cret"}}]})
    assert shape.status_code == 422 and ["body", "tasks", 1, "type"] in [e["loc"] for e in shape.json()["detail"]]
    assert "s3cret" not in shape.text
    unknown = client.post("/api/v1/tasks/batch", json={"tasks": [ok, ok, {"device_id": "pc-77", "type": "ping"}]})
    assert unknown.status_code == 422
    assert unknown.json()["detail"].startswith("1 of the 3 tasks are invalid, so none was created: tasks[2]: device 'pc-77'")
    for size in (0, TASK_BATCH_LIMIT + 1):
        refused = client.post("/api/v1/tasks/batch", json={"tasks": [ok] * size})
        assert refused.status_code == 422 and refused.json()["detail"][0]["loc"] == ["body", "tasks"]
    assert client.post("/api/v1/tasks/batch", json={"tasks": [ok] * TASK_BATCH_LIMIT}).status_code == 201
    assert client.get("/api/v1/tasks").json()["total"] == TASK_BATCH_LIMIT
    assert client.post("/api/v1/tasks/batch", json={"tasks": [ok]}, headers={"Authorization": ""}).status_code == 401


@pytest.mark.parametrize(("content", "error"), [
    ("not json", "is not valid JSON"),
    ('{"device_id": "pc-01"}', "must hold a JSON array of tasks"),
    ("[]", "must hold a JSON array of tasks"),
    (f"[{'{}, ' * TASK_BATCH_LIMIT}{{}}]", f"holds {TASK_BATCH_LIMIT + 1} tasks; one batch takes at most"),
])
def test_cli_send_batch_refuses_bad_files_before_any_request(tmp_path: Path, content: str, error: str) -> None:
    path = tmp_path / "tasks.json"
    path.write_text(content)
    result = CliRunner().invoke(task_cli, ["send-batch", str(path)], env={"COLUMNS": "500"})
    assert result.exit_code == 2 and error in result.output.replace("\n", " ")


def test_a_batch_created_while_disconnected_stays_queued_with_one_warning(
    sessions: sessionmaker[Session], caplog: pytest.LogCaptureFixture
) -> None:
    go_online(sessions, "pc-01")
    publisher = FakePublisher()
    publisher.accepting = False
    with sessions() as session, caplog.at_level("WARNING"):
        created = task_create.create_tasks(session, [_echo("pc-01", str(n)) for n in range(50)], publisher)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == ["50 tasks of the batch stay queued: the MQTT client is not connected; each is sent on its "
                        "device's next birth"]
    assert {status_of(sessions, t.id) for t in created} == {TaskStatus.QUEUED.value} and _task_count(sessions) == 50
