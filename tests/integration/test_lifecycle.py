"""Each task option on real processes (amqtt and Mosquitto): expiry, timeout on the device and
on the controller, retries with backoff, cancel (queued, running, waiting for a retry),
per-account ordering, and what a crash does to a side-effecting and to a repeatable task.

One broker and one controller per broker kind serve the whole module (starting them cost more
than most tests); each test has device ids of its own. The expiry test kills and restarts the
shared controller, which keeps its port and database."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest

from tests.harness import Broker, Controller, Device, Process, wait_for
from tests.integration.conftest import BROKER_KINDS, start_broker

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", params=BROKER_KINDS)
def broker(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
           _module_processes: list[Process]) -> Broker:
    return start_broker(request.param, tmp_path_factory.mktemp(f"lifecycle-{request.param}"), _module_processes)


@pytest.fixture(scope="module")
def controller(broker: Broker, tmp_path_factory: pytest.TempPathFactory, _module_processes: list[Process]) -> Controller:
    """A controller that sweeps often and gives silent devices 1 s past a task's timeout."""
    work: Path = tmp_path_factory.mktemp(f"lifecycle-controller-{broker.kind}")
    instance = Controller(broker, work, keepalive="5", sweep_interval="0.1", task_timeout_grace="1")
    _module_processes.append(instance.process)
    instance.start()
    return instance


def events_of(task: dict) -> list[str]:
    return [e["event"] for e in task["events"]]


def at(event: dict) -> datetime:
    return datetime.fromisoformat(event["at"])


def test_expiry_without_the_device_and_across_a_controller_restart(
    controller: Controller, start_device: Callable[..., Device]
) -> None:
    device = start_device("pc-x1")
    controller.wait_device("pc-x1", "online")
    device.kill()
    controller.wait_device("pc-x1", "offline")

    soon = controller.create_task("pc-x1", "append", ttl=0.5)
    expired = controller.wait_task(soon["id"], timeout=5)
    assert expired["status"] == "expired" and events_of(expired)[-1] == "expired"

    later = controller.create_task("pc-x1", "append", ttl=1.5)
    controller.process.kill()  # the expiry is in SQL, not in the dead process's timers
    controller.start()
    assert controller.wait_task(later["id"], timeout=10)["status"] == "expired"

    device.start()
    controller.wait_device("pc-x1", "online")
    check = controller.wait_task(controller.create_task("pc-x1", "ping")["id"])
    assert check["status"] == "succeeded"
    assert device.executions(soon["id"]) == 0 and device.executions(later["id"]) == 0


def test_timeout_on_the_device(controller: Controller, start_device: Callable[..., Device]) -> None:
    device = start_device("pc-x2")
    controller.wait_device("pc-x2", "online")
    task = controller.wait_task(controller.create_task("pc-x2", "sleep", params={"seconds": 30}, timeout=0.5)["id"])
    assert task["status"] == "timed_out" and "0.5" in task["message"]
    assert events_of(task)[:2] == ["accepted", "started"] and events_of(task)[-1] == "timed_out"
    assert device.executions(task["id"]) == 1
    assert controller.wait_task(controller.create_task("pc-x2", "ping")["id"])["status"] == "succeeded"


def test_timeout_on_the_controller_when_the_device_dies(
    controller: Controller, start_device: Callable[..., Device]
) -> None:
    device = start_device("pc-x3")
    controller.wait_device("pc-x3", "online")
    created = controller.create_task("pc-x3", "sleep", params={"seconds": 30}, timeout=1)
    controller.wait_task(created["id"], {"running"})
    device.kill()  # its own timeout dies with it

    task = controller.wait_task(created["id"], timeout=10)
    assert task["status"] == "timed_out" and "no result from device pc-x3" in task["message"]

    device.start()  # it reports the run as interrupted: too late to change the outcome
    late = wait_for(
        lambda: [e for e in (controller.task(created["id"]) or {})["events"] if e["event"] == "failed"],
        15, what="the restarted device's interrupted report",
    )[0]
    assert late["applied"] is False and late["error"]["code"] == "interrupted"
    assert controller.task(created["id"])["status"] == "timed_out"  # type: ignore[index]


def test_retries_with_backoff_until_the_limit(controller: Controller, start_device: Callable[..., Device]) -> None:
    device = start_device("pc-x4")
    controller.wait_device("pc-x4", "online")
    created = controller.create_task(
        "pc-x4", "sleep", params={"seconds": 30}, timeout=0.3, retries=2, retry_backoff=0.4
    )
    task = wait_for(
        lambda: (t := controller.task(created["id"])) and t["status"] == "timed_out" and t["attempt"] == 3
        and t["retry_at"] is None and t,
        20, what="third attempt timed out",
    )
    assert [e["event"] for e in task["events"] if e["event"] in ("timed_out", "retrying")] == [
        "timed_out", "retrying", "timed_out", "retrying", "timed_out"
    ]
    retries = [e for e in task["events"] if e["event"] == "retrying"]
    assert [e["message"] for e in retries] == ["attempt 2 of 3 (after timed_out)", "attempt 3 of 3 (after timed_out)"]
    ends = [e for e in task["events"] if e["event"] == "timed_out"]
    assert (at(retries[0]) - at(ends[0])).total_seconds() >= 0.4  # backoff 0.4 s, then doubled
    assert (at(retries[1]) - at(ends[1])).total_seconds() >= 0.8
    assert {e["attempt"] for e in task["events"]} == {1, 2, 3}
    key = created["id"]
    assert [device.executions(k) for k in (key, f"{key}#2", f"{key}#3")] == [1, 1, 1]


def test_cancel_queued_running_and_pending_retry(controller: Controller, start_device: Callable[..., Device]) -> None:
    device = start_device("pc-x5")
    controller.wait_device("pc-x5", "online")

    running = controller.create_task("pc-x5", "sleep", params={"seconds": 30})
    controller.wait_task(running["id"], {"running"})
    assert controller.api.post(f"/api/v1/tasks/{running['id']}/cancel").status_code == 202
    stopped = controller.wait_task(running["id"])
    assert stopped["status"] == "canceled" and device.executions(running["id"]) == 1

    waiting = controller.create_task("pc-x5", "sleep", params={"seconds": 30}, timeout=0.2, retries=3, retry_backoff=60)
    controller.wait_task(waiting["id"], {"timed_out"})
    assert controller.task(waiting["id"])["retry_at"] is not None  # type: ignore[index]
    assert controller.api.post(f"/api/v1/tasks/{waiting['id']}/cancel").status_code == 202
    canceled = controller.task(waiting["id"])
    assert canceled is not None and canceled["status"] == "canceled" and canceled["retry_at"] is None

    device.kill()
    controller.wait_device("pc-x5", "offline")
    queued = controller.create_task("pc-x5", "append")
    response = controller.api.post(f"/api/v1/tasks/{queued['id']}/cancel")
    assert response.status_code == 202 and response.json()["status"] == "canceled"
    device.start()
    controller.wait_device("pc-x5", "online")
    assert controller.wait_task(controller.create_task("pc-x5", "ping")["id"])["status"] == "succeeded"
    assert device.executions(queued["id"]) == 0
    assert controller.task(queued["id"])["status"] == "canceled"  # type: ignore[index]

    finished = controller.api.post(f"/api/v1/tasks/{queued['id']}/cancel")
    assert finished.status_code == 409 and "already canceled" in finished.json()["detail"]


def test_one_account_at_a_time_in_creation_order(controller: Controller, start_device: Callable[..., Device]) -> None:
    start_device("pc-x6", max_concurrency="3")
    controller.wait_device("pc-x6", "online")
    plan = ["a", "b", "a", None, "a", "b"]
    ids = [
        controller.create_task("pc-x6", "sleep", params={"seconds": 0.3, "steps": 1}, **({"account": a} if a else {}))["id"]
        for a in plan
    ]
    tasks = [controller.wait_task(i) for i in ids]
    assert all(t["status"] == "succeeded" for t in tasks)
    spans = [(at(next(e for e in t["events"] if e["event"] == "started")), at(t["events"][-1])) for t in tasks]
    for account in ("a", "b"):
        mine = [spans[i] for i, a in enumerate(plan) if a == account]
        assert all(prev[1] <= nxt[0] for prev, nxt in zip(mine, mine[1:])), f"account {account}: overlapping or out of order"
    most = max(sum(1 for s, e in spans if s <= moment < e) for moment, _ in spans)
    assert 2 <= most <= 3  # different accounts run side by side, never more than max_concurrency


def test_crash_never_repeats_a_side_effect_but_reruns_a_safe_task(
    controller: Controller, start_device: Callable[..., Device]
) -> None:
    device = start_device("pc-x7", max_concurrency="2")
    controller.wait_device("pc-x7", "online")
    unsafe = controller.create_task("pc-x7", "append", params={"line": "post", "after": 30}, retries=3, retry_backoff=0.1)
    safe = controller.create_task("pc-x7", "sleep", params={"seconds": 1.5, "steps": 3})
    wait_for(lambda: (t := controller.task(unsafe["id"])) and t["progress"] == 50, 10, what="the line written")
    controller.wait_task(safe["id"], {"running"})
    device.kill()
    device.start()

    rerun = controller.wait_task(safe["id"], {"succeeded"}, timeout=20)
    assert rerun["attempt"] == 2 and "retrying" in events_of(rerun)
    failed = controller.wait_task(unsafe["id"])
    assert failed["status"] == "failed" and failed["attempt"] == 1 and failed["retry_at"] is None
    assert failed["error"]["code"] == "interrupted" and failed["error"]["retryable"] is False
    assert "not run again" in failed["error"]["message"]
    lines = (device.data_dir / "appended-pc-x7.log").read_text().splitlines()
    assert lines == [f"{unsafe['id']}\tpost"]
    assert device.executions(unsafe["id"]) == 1 and device.executions(f"{unsafe['id']}#2") == 0
