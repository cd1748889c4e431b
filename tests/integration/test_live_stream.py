"""The push stream `GET /api/v1/events/stream` and `fleet watch` against a real fleet
(Mosquitto, a controller, device daemons): who may read it, filters, keep-alive comments, a
task followed from queued to succeeded, presence of a device that comes and goes, and
`fleet watch` printing, reconnecting after a controller restart and ending on Ctrl-C."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.dashboard_kit import DashboardFleet, running_fleet
from tests.harness import base_env, fleet_argv, wait_for
from tests.stream_reader import WAIT, Stream

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DashboardFleet]:
    with running_fleet(tmp_path_factory.mktemp("live"), ("pc-01",), live_ping_interval="1") as instance:
        yield instance


def test_the_stream_needs_read_scope_and_known_kinds(fleet: DashboardFleet) -> None:
    url = f"{fleet.url}/api/v1/events/stream"
    assert httpx.get(url, timeout=10).status_code == 401
    bad = httpx.get(f"{url}?kinds=task,nonsense", headers={"Authorization": f"Bearer {fleet.token('read')}"}, timeout=10)
    assert bad.status_code == 422 and "nonsense" in bad.json()["detail"]
    signed_in = fleet.http("read")  # the dashboard's session cookie admits the browser's EventSource
    with signed_in.stream("GET", "/api/v1/events/stream") as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        assert next(response.iter_lines()) == "event: hello"
    signed_in.cookies.set("fleet_session", "flt_nope_nope")
    assert signed_in.get("/api/v1/events/stream").status_code == 401


def test_a_task_is_followed_from_queued_to_succeeded_and_filters_hold(fleet: DashboardFleet) -> None:
    task_id = f"live-{uuid.uuid4().hex[:12]}"
    stream = Stream(fleet.url, f"task={task_id}", fleet.token("read"))
    try:
        other = fleet.controller.create_task("pc-01", "echo", params={"message": "not mine"})
        fleet.controller.create_task("pc-01", "sleep", id=task_id, params={"seconds": 0.6, "steps": 3})
        seen = stream.until(lambda kind, data: kind == "task" and data["status"] == "succeeded")
        assert {data["task_id"] for _kind, data in seen} == {task_id}, "another task's events came through"
        statuses = [data["status"] for kind, data in seen if kind == "task"]
        assert statuses[0] == "queued" and statuses[-1] == "succeeded", statuses
        progress = [data["progress"] for kind, data in seen if kind == "task_event" and data["event"] == "progress"]
        assert progress == [33, 67, 100], seen
        fleet.controller.wait_task(other["id"])
    finally:
        stream.close()


def test_presence_is_streamed_and_pings_keep_an_idle_stream_open(fleet: DashboardFleet) -> None:
    stream = Stream(fleet.url, "kinds=presence&device=pc-live", fleet.token("read"))
    try:
        wait_for(lambda: any(line.startswith(":") for line in list(stream.lines.queue)), 10, what="a keep-alive comment")
        device = fleet.start_device("pc-live")
        kind, data = stream.next()
        assert (kind, data["device_id"], data["status"]) == ("presence", "pc-live", "online")
        device.kill()
        stream.until(lambda kind, data: data.get("status") == "offline")
        assert stream.events.empty() or all(d.get("device_id") == "pc-live" for _k, d in list(stream.events.queue))
    finally:
        stream.close()


def _watch(fleet: DashboardFleet, *args: str) -> subprocess.Popen[str]:
    env = base_env(api_url=fleet.url, api_token=fleet.token("read"), data_dir=str(fleet.work / "watch"))
    return subprocess.Popen(fleet_argv("watch", *args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=fleet.work)


class Lines(queue.Queue[str]):
    """The lines of a pipe, read by a thread of their own (`reader`)."""

    def __init__(self, pipe: Any) -> None:
        super().__init__()
        self.reader = threading.Thread(target=self._read, args=(pipe,), daemon=True)
        self.reader.start()

    def _read(self, pipe: Any) -> None:
        for line in pipe:
            self.put(line)


def _lines(stream: Any) -> Lines:
    return Lines(stream)


def _line_with(lines: queue.Queue[str], text: str, timeout: float = WAIT) -> str:
    def found() -> str | None:
        while not lines.empty():
            line = lines.get()
            if text in line:
                return line
        return None

    return str(wait_for(found, timeout, what=f"a line with {text!r}"))


def test_fleet_watch_prints_reconnects_and_stops_on_ctrl_c(fleet: DashboardFleet) -> None:
    watch = _watch(fleet, "--kind", "task,task_event")
    try:
        out, err = _lines(watch.stdout), _lines(watch.stderr)
        _line_with(err, "connected to controller")
        task = fleet.controller.create_task("pc-01", "sleep", params={"seconds": 0.3, "steps": 2})
        _line_with(out, f"task   {task['id'][:12]} sleep on pc-01: succeeded")
        # The controller stops and comes back: its open stream ends cleanly (no half-sent
        # response in its log), and watch says so and carries on by itself.
        fleet.controller.process.stop()
        assert fleet.controller.process.popen is not None and fleet.controller.process.popen.returncode in (0, -15)
        assert "without completing response" not in fleet.controller.process.output()
        _line_with(err, "stream lost")
        fleet.controller.start()
        _line_with(err, "connected to controller")
        task = fleet.controller.create_task("pc-01", "echo", params={"message": "after the restart"})
        _line_with(out, f"task   {task['id'][:12]} echo on pc-01: succeeded")
        watch.send_signal(signal.SIGINT)  # Ctrl-C
        assert watch.wait(20) == 0
        err.reader.join(10)  # all it wrote, up to its end
        assert not any("Traceback" in line for line in list(err.queue)), list(err.queue)
    finally:
        if watch.poll() is None:
            watch.kill()


def test_fleet_watch_json_prints_raw_events(fleet: DashboardFleet) -> None:
    task_id = f"json-{uuid.uuid4().hex[:12]}"
    watch = _watch(fleet, "--json", "--task", task_id, "--count", "3")
    try:
        out = _lines(watch.stdout)
        _line_with(out, '"kind": "hello"')
        fleet.controller.create_task("pc-01", "echo", id=task_id, params={"message": "json"})
        assert watch.wait(WAIT) == 0, watch.stderr.read() if watch.stderr else ""
        wait_for(lambda: out.qsize() >= 3, 10, what="three events printed")
        events = [json.loads(out.get()) for _ in range(3)]
        assert all(e["task_id"] == task_id for e in events), events
        assert (events[0]["kind"], events[0]["status"]) == ("task", "queued"), events
    finally:
        if watch.poll() is None:
            watch.kill()
