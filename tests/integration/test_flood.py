"""One device login flooding births and results harms nobody else (promise 8), on both brokers:
real broker, controller and device daemons; the flooder is a raw paho login speaking the wire
contract (`tests/flooder.py`). While it sends 2,000 retained births with ever-new session ids
and 2,000 results in about 2 s, the other devices' tasks all finish, REST keeps answering, the
throttle is logged once per kind for the flooder and never for the others, and once the flood
ends the controller shows the flooder's last status (a birth, then its will: offline)."""

from __future__ import annotations

import re
from collections.abc import Callable

import httpx
import pytest

from tests.flooder import Flooder
from tests.harness import Broker, Controller, Device

pytestmark = pytest.mark.integration

DEVICES = ("pc-01", "pc-02", "pc-03")
TASKS = 30  # for the other devices, created while the flood runs
BIRTHS = RESULTS = 2000
SECONDS = 2.0


def test_a_flood_from_one_login_harms_no_other_device(
    broker: Broker, controller: Controller, start_device: Callable[..., Device]
) -> None:
    for device_id in DEVICES:
        start_device(device_id)
    for device_id in DEVICES:
        controller.wait_device(device_id, "online")
    # REST must answer through the flood; how fast is benchmarks/flood.py's business (on a loaded
    # 2-core CI machine a create waits for the ingest writer's SQLite transactions).
    controller.api.timeout = httpx.Timeout(120)
    flooder = Flooder(broker.port)
    try:
        flooder.publish_status("flood-start")
        controller.wait_device(flooder.device_id, "online")
        flooder.start(BIRTHS, RESULTS, SECONDS)
        ids = [controller.create_task(DEVICES[n % len(DEVICES)], "echo", params={"message": str(n)})["id"]
               for n in range(TASKS)]
        answered = 0
        while flooder.busy:  # REST keeps answering through the flood
            assert controller.api.get("/healthz").status_code == 200
            answered += 1
        report = flooder.join()
        assert report.births == BIRTHS and report.results == RESULTS
        flooder.publish_status(report.last_session, "offline")  # its will: the flood's last status
    finally:
        flooder.close()
    print(f"{broker.kind}: flood of {BIRTHS} births + {RESULTS} results sent in {report.seconds:.2f} s; "
          f"/healthz answered {answered} times meanwhile")

    for task_id in ids:  # nothing lost
        assert controller.wait_task(task_id, timeout=30)["status"] == "succeeded"
    shown = controller.wait_device(flooder.device_id, "offline", timeout=15)
    assert shown["session_id"] == report.last_session, shown
    for device_id in DEVICES:
        assert (controller.device(device_id) or {}).get("status") == "online"
    health = controller.api.get("/healthz").json()
    assert health["throttled_messages"] > BIRTHS, health

    log = controller.process.log_path.read_text(errors="replace")
    throttled = re.findall(r"device (\S+) sends more (status messages|results and heartbeats)", log)
    assert sorted(throttled) == [(flooder.device_id, "results and heartbeats"), (flooder.device_id, "status messages")]

