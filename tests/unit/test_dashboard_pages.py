"""The dashboard's routes in the real app on SQLite (its broker does not exist): sign-in and
out, what each scope is shown and allowed, CSRF, filters, error pages, and
`POST /api/v1/tasks/{id}/retry`."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from controller.services import tasks
from schemas.events import EventKind
from tests.services_kit import ADMIN_TOKEN, event, go_online


def _signed_in(client: TestClient, token: str) -> TestClient:
    """The same app, as a browser: no Authorization header, the dashboard's cookies."""
    browser = TestClient(client.app, follow_redirects=False)
    browser.get("/login")
    answer = browser.post("/login", data={"token": token, "csrf_token": browser.cookies["fleet_csrf"], "next": "/tasks"})
    assert answer.status_code == 303 and answer.headers["location"] == "/tasks", answer.text
    return browser


def _token(client: TestClient, scope: str) -> str:
    answer = client.post("/api/v1/tokens", json={"name": f"ui {scope}", "scope": scope})
    assert answer.status_code == 201
    return str(answer.json()["token"])


def _finished_task(client: TestClient) -> dict[str, Any]:
    sessions: sessionmaker[Session] = client.app.state.sessions  # type: ignore[attr-defined]
    go_online(sessions, "pc-01")
    task = client.post("/api/v1/tasks", json={"device_id": "pc-01", "type": "echo", "params": {"message": "hi"}}).json()
    with sessions() as session:
        tasks.record_event(session, "pc-01", event(task["id"], "pc-01", EventKind.SUCCEEDED, 0, result={"message": "hi"}))
    return dict(task)


def test_pages_need_a_sign_in_and_refuse_bad_tokens(client: TestClient) -> None:
    browser = TestClient(client.app, follow_redirects=False)
    answer = browser.get("/devices?status=online")
    assert answer.status_code == 303 and answer.headers["location"] == "/login?next=/devices%3Fstatus%3Donline"
    assert browser.get("/devices/rows", headers={"HX-Request": "true"}).headers["HX-Redirect"].startswith("/login")
    login = browser.get("/login")
    cookie = login.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    wrong = browser.post("/login", data={"token": "flt_nope_nope", "csrf_token": browser.cookies["fleet_csrf"]})
    assert wrong.status_code == 401 and "fleet token create" in wrong.text and "flt_nope_nope" not in wrong.text
    stale = browser.post("/login", data={"token": ADMIN_TOKEN, "csrf_token": "forged"})
    assert stale.status_code == 403 and "fleet_session" not in stale.headers.get("set-cookie", "")
    offsite = browser.post("/login", data={
        "token": ADMIN_TOKEN, "csrf_token": browser.cookies["fleet_csrf"], "next": "//evil.example/"})
    assert offsite.status_code == 303 and offsite.headers["location"] == "/", "never sent to another site"


def test_a_read_token_sees_no_forms_and_its_posts_are_refused(client: TestClient) -> None:
    task = _finished_task(client)
    reader = _signed_in(client, _token(client, "read"))
    for path in ("/", "/devices", "/devices/pc-01", "/tasks", f"/tasks/{task['id']}"):
        page = reader.get(path)
        assert page.status_code == 200, (path, page.text)
        assert page.text.count('method="post"') == 1, path  # sign out only
        assert "retry-task" not in page.text and "cancel-task" not in page.text
    csrf = reader.cookies["fleet_csrf"]
    assert reader.post(f"/tasks/{task['id']}/retry", data={"csrf_token": csrf}).status_code == 403
    operator = _signed_in(client, _token(client, "operate"))
    page = operator.get(f"/tasks/{task['id']}").text
    assert 'id="retry-task"' in page and operator.cookies["fleet_csrf"] in page
    assert operator.post(f"/tasks/{task['id']}/retry", data={"csrf_token": "wrong"}).status_code == 403
    again = operator.post(f"/tasks/{task['id']}/retry", data={"csrf_token": operator.cookies["fleet_csrf"]})
    assert again.status_code == 303 and again.headers["location"] != f"/tasks/{task['id']}"
    htmx = operator.post(f"/tasks/{task['id']}/retry", headers={"HX-Request": "true", "X-CSRF-Token": operator.cookies["fleet_csrf"]})
    assert htmx.status_code == 204 and htmx.headers["HX-Location"].startswith("/tasks/")
    assert client.get("/api/v1/tasks", params={"device_id": "pc-01"}).json()["total"] == 3


def test_sign_out_needs_the_csrf_value(client: TestClient) -> None:
    browser = _signed_in(client, ADMIN_TOKEN)
    browser.post("/logout", data={"csrf_token": "forged"})
    assert browser.get("/").status_code == 200, "a forged sign-out must not end the session"
    browser.post("/logout", data={"csrf_token": browser.cookies["fleet_csrf"]})
    assert browser.get("/").status_code == 303


def test_task_filters_and_errors_are_pages(client: TestClient) -> None:
    task = _finished_task(client)
    browser = _signed_in(client, ADMIN_TOKEN)
    listed = browser.get("/tasks", params={"status": "succeeded", "type": "echo", "device_id": "pc-01", "since": "2000-01-01T00:00"})
    assert listed.status_code == 200 and task["id"][:12] in listed.text
    assert task["id"][:12] not in browser.get("/tasks", params={"until": "2000-01-01T00:00"}).text
    assert task["id"][:12] not in browser.get("/tasks", params={"account": "nobody"}).text
    bad = browser.get("/tasks", params={"since": "yesterday"})
    assert bad.status_code == 422 and "YYYY-MM-DDTHH:MM" in bad.text and bad.headers["content-type"].startswith("text/html")
    assert browser.get("/tasks", params={"status": "done"}).status_code == 422
    missing = browser.get("/tasks/nope")
    assert missing.status_code == 404 and "<html" in missing.text
    assert client.get("/api/v1/tasks/nope").json()["detail"].startswith("task 'nope' does not exist")


def test_language_from_header_and_cookie(client: TestClient) -> None:
    browser = _signed_in(client, ADMIN_TOKEN)
    assert ">设备<" in browser.get("/", headers={"Accept-Language": "zh-CN,zh;q=0.9"}).text
    assert ">Devices<" in browser.get("/", headers={"Accept-Language": "en-US"}).text
    switched = browser.get("/lang/zh_CN", params={"next": "/devices"})
    assert switched.status_code == 303 and switched.headers["location"] == "/devices"
    assert ">设备<" in browser.get("/", headers={"Accept-Language": "en-US"}).text


def test_rest_retry_makes_a_new_task_and_refuses_an_unfinished_one(client: TestClient) -> None:
    task = _finished_task(client)
    again = client.post(f"/api/v1/tasks/{task['id']}/retry")
    assert again.status_code == 201
    body = again.json()
    assert body["id"] != task["id"] and (body["type"], body["params"], body["device_id"]) == ("echo", {"message": "hi"}, "pc-01")
    refused = client.post(f"/api/v1/tasks/{body['id']}/retry")
    assert refused.status_code == 409 and "still queued" in refused.json()["detail"]
    assert client.post("/api/v1/tasks/nope/retry").status_code == 404


def test_the_timeline_cuts_long_detail_values() -> None:
    from controller.dashboard.render import _brief

    shown = _brief({"waiting_for": "scan", "qr_png": "iVBOR" + "A" * 5000, "step": 2})
    assert '"waiting_for": "scan"' in shown and '"step": 2' in shown
    assert "(5005 chars)" in shown and len(shown) < 200


def test_a_form_body_past_the_request_limit_is_refused_unread(client: TestClient) -> None:
    browser = _signed_in(client, _token(client, "operate"))
    limit = client.app.state.settings.max_request_bytes  # type: ignore[attr-defined]
    answer = browser.post("/accounts/bind", data={"name": "x" * (limit + 10), "device_id": "pc-01"})
    assert answer.status_code == 413 and "FLEET_MAX_REQUEST_BYTES" in answer.json()["detail"]


def test_the_devices_page_filters_by_tag_expression_and_shows_tags(client: TestClient) -> None:
    sessions: sessionmaker[Session] = client.app.state.sessions  # type: ignore[attr-defined]
    for device_id in ("pc-01", "pc-02"):
        go_online(sessions, device_id)
    assert client.put("/api/v1/devices/pc-01/tags", json={"tags": {"region": "上海"}}).status_code == 200
    browser = _signed_in(client, ADMIN_TOKEN)
    page = browser.get("/devices", params={"tags": "region=上海"})
    assert page.status_code == 200 and 'id="device-pc-01"' in page.text and 'id="device-pc-02"' not in page.text
    assert "region=上海" in page.text and "tags=region%3D" in page.text, "the live rows keep the filter"
    assert 'id="device-pc-02"' in browser.get("/devices/rows", params={"tags": "not has region"}).text
    bad = browser.get("/devices", params={"tags": "region=="})
    assert bad.status_code == 422 and "at column" in bad.text and bad.headers["content-type"].startswith("text/html")
    assert "region=上海" in browser.get("/devices/pc-01").text
