"""Two `fleet controller` processes on one fresh PostgreSQL database and one Mosquitto (issue
14): a create sent to both with one `Idempotency-Key` (one after the other, after the first
one was SIGKILLed, or at the same moment) makes one task that the device runs once; a file
uploaded through one controller downloads byte-identical through the other with the signed
link the first one gave, whole, by range, and resumed by the device's own downloader. And
`fleet task send`, whose first try broke off as the answer came, sends again with the same
key and creates one task."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import socket
import subprocess
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from device.transfer import fetch
from device.url_policy import UrlPolicy
from tests.harness import (
    Broker,
    Controller,
    Device,
    Process,
    base_env,
    fleet_argv,
    start_controller_on_embedded_broker,
    wait_for,
)

pytestmark = pytest.mark.integration

Pair = tuple[Controller, Controller]


@pytest.fixture
def mosquitto(tmp_path: Path, _processes: list[Process]) -> Broker:
    broker = Broker("mosquitto", tmp_path)
    _processes.append(broker.process)
    broker.start()
    return broker


@pytest.fixture
def pair(mosquitto: Broker, postgres_url: str, tmp_path: Path, _processes: list[Process]) -> Pair:
    """Controllers A and B (own data dirs, no shared key or disk) on one database; A first, so
    that B finds the schema migrated."""
    started: list[Controller] = []
    for name in ("a", "b"):
        work = tmp_path / name
        work.mkdir()
        token = started[0].admin_token if started else None  # one FLEET_ADMIN_TOKEN, as behind one address
        controller = Controller(mosquitto, work, database_url=postgres_url, admin_token=token, file_store="database",
                                keepalive="5")
        _processes.append(controller.process)
        controller.start()
        started.append(controller)
    return started[0], started[1]


@pytest.fixture
def device(mosquitto: Broker, pair: Pair, tmp_path: Path, _processes: list[Process]) -> Device:
    instance = Device("pc-01", mosquitto, tmp_path, keepalive="5")
    _processes.append(instance.process)
    instance.start()
    pair[0].wait_device("pc-01", "online", timeout=30)
    return instance


def post(controller: Controller, body: dict[str, Any], key: str) -> httpx.Response:
    response = controller.api.post("/api/v1/tasks", json=body, headers={"Idempotency-Key": key})
    assert response.status_code == 201, response.text
    return response


def total_tasks(controller: Controller) -> int:
    return int(controller.api.get("/api/v1/tasks").json()["total"])


def appended(device: Device) -> list[str]:
    path = device.data_dir / "appended-pc-01.log"
    return path.read_text().splitlines() if path.exists() else []


def ran_once(device: Device, controller: Controller, task_id: str) -> None:
    final = controller.wait_task(task_id, timeout=60)
    assert final["status"] == "succeeded", final
    assert device.executions(task_id) == 1
    assert [line.split("\t")[0] for line in appended(device)].count(task_id) == 1


def test_one_key_to_both_controllers_makes_one_task(pair: Pair, device: Device) -> None:
    a, b = pair
    body = {"device_id": "pc-01", "type": "append", "params": {"line": "once"}}
    key = str(uuid.uuid4())
    first = post(a, body, key)
    again = post(b, body, key)
    assert again.json() == first.json() and again.headers["Idempotent-Replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    ran_once(device, b, first.json()["id"])
    assert total_tasks(a) == total_tasks(b) == 1
    other = b.api.post("/api/v1/tasks", json={**body, "params": {"line": "twice"}}, headers={"Idempotency-Key": key})
    assert other.status_code == 422 and "already used" in other.json()["detail"]


def test_the_retry_after_a_sigkill_goes_to_the_other_controller(pair: Pair, device: Device) -> None:
    a, b = pair
    body = {"device_id": "pc-01", "type": "append", "params": {"line": "after kill"}}
    key = str(uuid.uuid4())
    first = post(a, body, key)
    a.process.kill()  # right after answering: the client never saw it, say, and retries elsewhere
    again = post(b, body, key)
    assert again.json()["id"] == first.json()["id"] and again.headers["Idempotent-Replayed"] == "true"
    ran_once(device, b, first.json()["id"])
    assert total_tasks(b) == 1
    assert len(appended(device)) == 1


def test_a_controller_killed_while_answering(pair: Pair, device: Device) -> None:
    """The measured failure of issue 14: A is SIGKILLed as its answer starts, the client sees
    the connection break and sends the request again, to B."""
    a, b = pair
    body = {"device_id": "pc-01", "type": "append", "params": {"line": "killed mid-answer"}}
    key = str(uuid.uuid4())
    proxy = DropsFirstAnswer(a.port, on_answer=a.process.kill)
    try:
        with pytest.raises(httpx.TransportError):
            httpx.post(f"http://127.0.0.1:{proxy.port}/api/v1/tasks", json=body, timeout=30,
                       headers={"Idempotency-Key": key, "Authorization": f"Bearer {a.admin_token}"})
    finally:
        proxy.close()
    assert not a.process.running
    again = post(b, body, key)
    assert again.headers["Idempotent-Replayed"] == "true", "A had created the task before it died"
    ran_once(device, b, again.json()["id"])
    assert total_tasks(b) == 1 and len(appended(device)) == 1


def race(pair: Pair, send: Callable[[Controller], httpx.Response]) -> list[httpx.Response]:
    """`send` to A and to B from two threads released at the same moment."""
    gate = threading.Barrier(2)
    answers: list[httpx.Response | None] = [None, None]

    def run(index: int) -> None:
        gate.wait(10)
        answers[index] = send(pair[index])

    threads = [threading.Thread(target=run, args=(index,)) for index in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert all(answer is not None for answer in answers)
    return [answer for answer in answers if answer is not None]


def test_concurrent_identical_creates_on_both_controllers(pair: Pair, device: Device) -> None:
    a, b = pair
    rounds = 5
    ids = set()
    for number in range(rounds):
        body = {"device_id": "pc-01", "type": "append", "params": {"line": f"race {number}"}}
        key = str(uuid.uuid4())
        answers = race(pair, lambda controller: post(controller, body, key))  # noqa: B023 - joined in the loop
        assert answers[0].json() == answers[1].json()
        assert sorted(answer.headers.get("Idempotent-Replayed", "") for answer in answers) == ["", "true"]
        ids.add(answers[0].json()["id"])
        chosen = {"id": f"race-{number}-{uuid.uuid4().hex[:8]}", **body}  # a client-chosen id, no key
        by_id = race(pair, lambda controller: controller.api.post("/api/v1/tasks", json=chosen))  # noqa: B023
        assert [answer.status_code for answer in by_id] == [201, 201]
        assert by_id[0].json()["id"] == by_id[1].json()["id"] == chosen["id"]
        ids.add(chosen["id"])
    assert total_tasks(a) == total_tasks(b) == 2 * rounds
    for task_id in ids:
        ran_once(device, a, task_id)
    assert len(appended(device)) == 2 * rounds


def on(controller: Controller, url: str) -> str:
    """The same link, sent to `controller` (as a load balancer in front of both would)."""
    link = httpx.URL(url)
    return str(link.copy_with(host="127.0.0.1", port=controller.port))


def test_a_file_from_one_controller_is_served_by_the_other(pair: Pair, tmp_path: Path) -> None:
    a, b = pair
    content = os.urandom(3 * 1024 * 1024 + 4321)
    stored = a.api.post("/api/v1/files", params={"name": "clip.mp4"}, content=content,
                        headers={"content-type": "video/mp4"}, timeout=60)
    assert stored.status_code == 201, stored.text
    info = stored.json()
    link = on(b, info["url"])
    with httpx.Client(timeout=30) as device:  # no token: the signature A made is the credential on B
        whole = device.get(link)
        assert whole.status_code == 200 and hashlib.sha256(whole.content).hexdigest() == info["sha256"]
        tail = device.get(link, headers={"Range": "bytes=1048000-"})
        assert tail.status_code == 206 and tail.content == content[1_048_000:]
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / f"{info['sha256']}.part").write_bytes(content[:1_500_000])  # a download that broke off
    seen: list[int] = []

    async def progress(have: int, _total: int | None) -> None:
        seen.append(have)

    got = asyncio.run(fetch(link, cache, size=info["size"], sha256=info["sha256"], progress=progress,
                            policy=UrlPolicy(f"http://127.0.0.1:{b.port}")))
    assert got.read_bytes() == content
    assert seen[0] > 1_500_000, "it resumed where it broke off instead of starting over"
    assert b.api.delete(f"/api/v1/files/{info['id']}").status_code == 204
    wait_for(lambda: a.api.get(f"/api/v1/files/{info['id']}").status_code == 404, 10, what="deleted everywhere")


class DropsFirstAnswer:
    """A TCP proxy in front of a controller that hands every request on, but on its first
    connection hangs up as soon as the answer starts, without relaying it: a controller killed
    while it answered, as the client sees it."""

    def __init__(self, target: int, on_answer: Callable[[], None] = lambda: None) -> None:
        """`on_answer` runs when the first answer starts, before the client is hung up on."""
        self.target, self.on_answer = target, on_answer
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            first = self.connections == 1
            threading.Thread(target=self._handle, args=(client, first), daemon=True).start()

    def _handle(self, client: socket.socket, first: bool) -> None:
        upstream = socket.create_connection(("127.0.0.1", self.target))
        if first:
            request = b""
            while b"\r\n\r\n" not in request:
                request += client.recv(65536)
            head, _, body = request.partition(b"\r\n\r\n")
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
            while len(body) < length:
                body += client.recv(65536)
            upstream.sendall(head + b"\r\n\r\n" + body)
            upstream.recv(1)  # the controller answers: it committed the task
            self.on_answer()
            client.close()
            upstream.close()
            return
        for source, sink in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.listener.close()


def test_the_cli_sends_again_with_the_same_key(tmp_path: Path, _processes: list[Process]) -> None:
    controller = start_controller_on_embedded_broker(tmp_path, _processes)
    device = Device("pc-cli", controller.broker, tmp_path, keepalive="5")
    _processes.append(device.process)
    device.start()
    controller.wait_device("pc-cli", "online", timeout=30)
    proxy = DropsFirstAnswer(controller.port)
    try:
        env = base_env(api_url=f"http://127.0.0.1:{proxy.port}", api_token=controller.admin_token, data_dir=str(tmp_path))
        sent = subprocess.run(fleet_argv("task", "send", "pc-cli", "append", "-p", "line=cli"), env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)
    finally:
        proxy.close()
    assert sent.returncode == 0, sent.stderr
    assert "sending it again" in sent.stderr and proxy.connections == 2
    page = controller.api.get("/api/v1/tasks").json()
    assert page["total"] == 1, "the second try answered the task the first one created"
    task_id = page["items"][0]["id"]
    assert task_id in sent.stdout
    assert controller.wait_task(task_id, timeout=60)["status"] == "succeeded" and device.executions(task_id) == 1
