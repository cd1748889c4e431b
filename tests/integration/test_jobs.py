"""Jobs (`/api/v1/jobs`, docs/architecture.md#jobs) on one real fleet per module: a Mosquitto
broker, a controller (rollout passes every 0.25 s) and `fleet simulate` devices in groups.

A job over a tag expression reaches exactly the devices it selects; a 60/min rollout creates its runs at
least a second apart; an abort rule stops a failing job and cancels its run that had not
started; a continuous job runs on a device that joins its group after it started; pause holds
the rollout, resume continues it, cancel cancels what has not started; and the CLI drives it.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.harness import Broker, Controller, Process, SimulatorThread, base_env, fleet_argv, wait_for

pytestmark = pytest.mark.integration

RATE_DEVICES = 6
FINAL = {"succeeded", "failed", "completed", "aborted", "canceled"}


@dataclass
class Fleet:
    controller: Controller
    broker: Broker
    work: Path
    stack: contextlib.ExitStack

    def simulate(self, prefix: str, count: int, **options: Any) -> SimulatorThread:
        sim = SimulatorThread(self.broker.url, count, prefix=prefix, heartbeat=30.0, seed=3, **options)
        self.stack.callback(sim.close)
        sim.call(sim.fleet.start())
        for device_id in sim.fleet.ids:
            self.controller.wait_device(device_id, "online", timeout=30)
        return sim


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    work = tmp_path_factory.mktemp("jobs")
    processes: list[Process] = []
    with contextlib.ExitStack() as stack:
        broker = Broker("mosquitto", work)
        processes.append(broker.process)
        stack.callback(lambda: [process.kill() for process in processes])
        broker.start()
        # The simulated devices declare their groups; this fleet's operator lets the controller adopt them.
        controller = Controller(broker, work, job_interval="0.25", accept_declared_groups="true")
        processes.append(controller.process)
        controller.start()
        fleet = Fleet(controller, broker, work, stack)
        fleet.simulate("rate", RATE_DEVICES, groups=["rate"])
        fleet.simulate("bad", 3, groups=["bad"], failure_rate=1.0)
        away = fleet.simulate("away", 1, groups=["away"])
        away.close()  # known to the controller, offline: its runs stay queued
        controller.wait_device("away-0000", "offline", timeout=30)
        yield fleet


def _create(controller: Controller, **body: Any) -> dict[str, Any]:
    response = controller.api.post("/api/v1/jobs", json={"type": "echo", "params": {"message": "job"}, **body})
    assert response.status_code == 201, response.text
    job: dict[str, Any] = response.json()
    return job


def _job(controller: Controller, job_id: str) -> dict[str, Any]:
    response = controller.api.get(f"/api/v1/jobs/{job_id}")
    assert response.status_code == 200, response.text
    job: dict[str, Any] = response.json()
    return job


def _runs(controller: Controller, job_id: str) -> list[dict[str, Any]]:
    response = controller.api.get(f"/api/v1/jobs/{job_id}/runs", params={"limit": 500})
    assert response.status_code == 200, response.text
    runs: list[dict[str, Any]] = response.json()["items"]
    return runs


def _wait_status(controller: Controller, job_id: str, statuses: set[str], timeout: float = 30) -> dict[str, Any]:
    return wait_for(lambda: (job := _job(controller, job_id))["status"] in statuses and job, timeout, 0.1,
                    f"job {job_id} {sorted(statuses)}")


REGIONS = ["sh", "bj", "gz"]
MATCHING = [f"rate-{n:04d}" for n in range(RATE_DEVICES) if REGIONS[n % 3] in ("sh", "bj")]
EXPRESSION = "platform=douyin and region in (sh, bj)"


def _tag(controller: Controller) -> None:
    """rate devices: douyin in sh, bj, gz in turn; bad devices: kuaishou in sh."""
    for n in range(RATE_DEVICES):
        answer = controller.api.put(f"/api/v1/devices/rate-{n:04d}/tags",
                                    json={"tags": {"platform": "douyin", "region": REGIONS[n % 3]}})
        assert answer.status_code == 200, answer.text
    for n in range(3):
        answer = controller.api.put(f"/api/v1/devices/bad-{n:04d}/tags", json={"tags": {"platform": "kuaishou", "region": "sh"}})
        assert answer.status_code == 200, answer.text


def test_a_job_over_a_tag_expression_reaches_exactly_the_matching_devices(fleet: Fleet) -> None:
    controller = fleet.controller
    _tag(controller)
    job = _create(controller, target={"tags": EXPRESSION}, name="douyin in sh and bj")
    assert job["status"] == "scheduled" and job["mode"] == "snapshot"
    done = _wait_status(controller, job["id"], FINAL)
    runs = _runs(controller, job["id"])
    assert done["status"] == "succeeded", done
    assert sorted(run["device_id"] for run in runs) == MATCHING
    assert {run["id"] for run in runs} == {f"{job['id']}:{device}" for device in MATCHING}
    assert all(run["status"] == "succeeded" and run["origin"] == "job" and run["job_id"] == job["id"] for run in runs)
    progress = done["progress"]
    assert (progress["runs"], progress["pending_targets"], progress["success_rate"]) == (len(MATCHING), 0, 1.0)
    listed = controller.api.get("/api/v1/jobs", params={"status": "succeeded"}).json()
    assert job["id"] in [item["id"] for item in listed["items"]]
    wrong = controller.api.post("/api/v1/jobs", json={"type": "echo", "target": {"tags": "platform="}})
    assert wrong.status_code == 422 and "platform" in wrong.text  # a wrong expression says where


def test_a_60_per_minute_rollout_creates_runs_a_second_apart(fleet: Fleet) -> None:
    controller = fleet.controller
    job = _create(controller, target={"groups": ["rate"]}, rollout={"kind": "rate", "per_minute": 60})
    done = _wait_status(controller, job["id"], FINAL, timeout=40)
    assert done["status"] == "succeeded", done
    runs = sorted(_runs(controller, job["id"]), key=lambda run: run["created_at"])
    assert len(runs) == RATE_DEVICES
    created = [datetime.fromisoformat(run["created_at"]) for run in runs]
    gaps = [(b - a).total_seconds() for a, b in zip(created, created[1:])]
    assert all(gap >= 0.99 for gap in gaps), gaps  # the controller's clock: a run per second at most
    assert (created[-1] - created[0]).total_seconds() >= RATE_DEVICES - 1 - 0.01
    dispatched = sorted(datetime.fromisoformat(run["dispatched_at"]) for run in runs)
    assert (dispatched[-1] - dispatched[0]).total_seconds() >= RATE_DEVICES - 1 - 0.3  # as sent, within ack jitter


def test_an_abort_rule_stops_a_failing_job_and_cancels_its_run_that_had_not_started(fleet: Fleet) -> None:
    controller = fleet.controller
    targets = ["away-0000", "bad-0000", "bad-0001"]  # created in this order, one every 2 s
    job = _create(controller, target={"device_ids": targets}, rollout={"kind": "rate", "per_minute": 30},
                  abort=[{"on": "failed", "count": 1, "min_runs": 1}])
    done = _wait_status(controller, job["id"], FINAL, timeout=40)
    assert done["status"] == "aborted", done
    assert done["abort_reason"].startswith("1 of 1 ended runs failed"), done["abort_reason"]
    runs = {run["device_id"]: run["status"] for run in _runs(controller, job["id"])}
    assert runs == {"away-0000": "canceled", "bad-0000": "failed"}  # the offline device's queued run: canceled
    assert done["progress"]["pending_targets"] == 1  # bad-0001 never got a run


def test_a_continuous_job_runs_on_a_device_that_joins_its_group_later(fleet: Fleet) -> None:
    controller = fleet.controller
    fleet.simulate("late", 1, groups=["late"])
    job = _create(controller, target={"groups": ["late"]}, mode="continuous")

    def succeeded_on() -> set[str]:
        return {run["device_id"] for run in _runs(controller, job["id"]) if run["status"] == "succeeded"}

    wait_for(lambda: succeeded_on() == {"late-0000"}, 30, 0.1, "the run on the first member")
    fleet.simulate("later", 1, groups=["late"])  # joins after the job started
    wait_for(lambda: succeeded_on() == {"late-0000", "later-0000"}, 30, 0.1, "a run on the device that joined")
    assert _job(controller, job["id"])["status"] == "running"  # continuous: until canceled
    canceled = controller.api.post(f"/api/v1/jobs/{job['id']}/cancel")
    assert canceled.status_code == 200 and canceled.json()["status"] == "canceled", canceled.text


def test_pause_holds_the_rollout_resume_continues_cancel_cancels_what_has_not_started(fleet: Fleet) -> None:
    controller = fleet.controller
    targets = ["away-0000", "rate-0000", "rate-0001", "rate-0002"]
    job = _create(controller, target={"device_ids": targets}, rollout={"kind": "rate", "per_minute": 60})
    wait_for(lambda: _job(controller, job["id"])["progress"]["runs"] >= 1, 20, 0.05, "the first run")
    paused = controller.api.post(f"/api/v1/jobs/{job['id']}/pause")
    assert paused.status_code == 200 and paused.json()["status"] == "paused", paused.text
    held = paused.json()["progress"]["runs"]
    assert held < len(targets)
    next_run = datetime.fromisoformat(paused.json()["next_run_at"]).timestamp()
    wait_for(lambda: time.time() > next_run + 1.0, 10, 0.1, "a second past the next run's time")
    assert _job(controller, job["id"])["progress"]["runs"] == held  # nothing created while paused
    again = controller.api.post(f"/api/v1/jobs/{job['id']}/pause")
    assert again.status_code == 409 and "paused" in again.json()["detail"]

    assert controller.api.post(f"/api/v1/jobs/{job['id']}/resume").json()["status"] == "running"
    wait_for(lambda: _job(controller, job["id"])["progress"]["pending_targets"] == 0, 20, 0.1, "every run created")
    wait_for(lambda: _job(controller, job["id"])["progress"]["by_status"].get("succeeded") == 3, 20, 0.1,
             "the online devices' runs")
    canceled = controller.api.post(f"/api/v1/jobs/{job['id']}/cancel").json()
    assert canceled["status"] == "canceled"
    assert canceled["progress"]["by_status"] == {"canceled": 1, "succeeded": 3}  # away-0000's queued run


def test_the_fleet_job_commands(fleet: Fleet) -> None:
    controller = fleet.controller
    env = base_env(api_url=f"http://127.0.0.1:{controller.port}", api_token=controller.admin_token)
    env["COLUMNS"] = "250"  # rich tables fit the ids on one line

    def fleet_job(*args: str) -> str:
        done = subprocess.run(fleet_argv("job", *args), env=env, capture_output=True, text=True, timeout=60,
                              cwd=fleet.work)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    created = json.loads(fleet_job("create", "echo", "--group", "bad", "--params", '{"message": "x"}',
                                   "--batch", "1", "--pause", "0", "--wait", "--abort-failed", "50%", "--min-runs", "2", "--json"))
    assert created["rollout"] == {"kind": "batches", "size": 1, "pause": 0.0, "wait": True}
    assert created["abort"] == [{"on": "failed_or_timed_out", "count": None, "percent": 50.0, "min_runs": 2}]
    _wait_status(controller, created["id"], FINAL)
    shown = fleet_job("show", created["id"])
    assert "aborted" in shown and "2 of 2 ended runs" in shown
    _tag(controller)  # as the first test does; idempotent
    preview = fleet_job("create", "echo", "--target-tags", EXPRESSION, "--dry-run")
    assert [line for line in preview.splitlines() if line.startswith("rate-")] == MATCHING
    assert f"{len(MATCHING)} device(s)" in preview
