"""Fixtures of the integration tier: real broker, controller and device processes per test,
killed afterwards; a failed test shows the tail of each process's log. A module whose tests
can share one broker and controller (each test with its own device ids) starts them once with
`start_broker` and `_module_processes` (see test_e2e.py): a start costs seconds on 2 cores."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.databases import fresh_postgres
from tests.harness import Broker, Controller, Device, MqttProbe, Process, missing_service
from tests.nats_cluster import NatsCluster

BROKER_KINDS = ["amqtt", "mosquitto"]
# A 3-node NATS cluster (JetStream + MQTT, `tests/nats_cluster.py`), for the suites that ask for
# it with `parametrize("broker", WITH_CLUSTER, indirect=True)`: test_e2e and test_chaos.
WITH_CLUSTER = [*BROKER_KINDS, "nats"]
CHROMIUM = Path("/usr/bin/chromium")
# Without the background-networking flags Chromium keeps trying to reach Google's hosts.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call" and report.failed and hasattr(item, "funcargs"):
        shared = item.funcargs.get("_module_processes", [])
        for process in [*shared, *item.funcargs.get("_processes", [])]:
            report.sections.append((f"log of {process.name}", process.log_tail(60)))
    return report


@pytest.fixture
def _processes() -> Iterator[list[Process]]:
    processes: list[Process] = []
    yield processes
    for process in processes:
        process.kill()


@pytest.fixture(scope="module")
def _module_processes() -> Iterator[list[Process]]:
    """Processes one module's tests share, killed after its last test (shown in a failure's report)."""
    processes: list[Process] = []
    yield processes
    for process in processes:
        process.kill()


def start_broker(kind: str, work: Path, processes: list[Process]) -> Broker:
    """A started broker of `kind` ("amqtt", "mosquitto" or "nats": a 3-node NATS cluster whose
    `url` lists every node), its processes added to `processes`."""
    if kind == "nats":
        cluster = NatsCluster(work)
        processes.extend(cluster.processes)
        cluster.start()
        return cluster  # type: ignore[return-value]  # quacks like a Broker
    instance = Broker(kind, work)
    processes.append(instance.process)
    instance.start()
    return instance


@pytest.fixture(params=BROKER_KINDS)
def broker(request: pytest.FixtureRequest, tmp_path: Path, _processes: list[Process]) -> Broker:
    """A fresh broker process: the embedded amqtt broker (`fleet broker`) or Mosquitto; or, where
    a suite asks for "nats", a 3-node NATS cluster (its `url` lists every node)."""
    return start_broker(request.param, tmp_path, _processes)


@pytest.fixture
def controller(broker: Broker, tmp_path: Path, _processes: list[Process]) -> Controller:
    instance = Controller(broker, tmp_path, keepalive="5")
    _processes.append(instance.process)
    instance.start()
    return instance


@pytest.fixture
def start_device(broker: Broker, tmp_path: Path, _processes: list[Process]) -> Callable[..., Device]:
    """Start a device process: `start_device("pc-01", keepalive="2", groups=["g1"])`. On a NATS
    cluster the devices spread over the nodes: the n-th device's URL list starts at node n+1 (the
    controller and probes start at node 0)."""
    started = 0

    def start(device_id: str, **settings: Any) -> Device:
        nonlocal started
        settings.setdefault("keepalive", "5")
        if isinstance(broker, NatsCluster):
            started += 1
            settings.setdefault("mqtt_url", broker.url_from(started % broker.size))
        instance = Device(device_id, broker, tmp_path, **settings)
        _processes.append(instance.process)
        instance.start()
        return instance

    return start


@pytest.fixture
def probe(broker: Broker) -> Iterator[Callable[..., MqttProbe]]:
    probes: list[MqttProbe] = []

    def make(*topics: str) -> MqttProbe:
        instance = MqttProbe(broker, *topics)
        probes.append(instance)
        return instance

    yield make
    for instance in probes:
        instance.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium, headless, driven by Playwright: one per test module."""
    if not CHROMIUM.exists():
        missing_service("chromium is not installed (Debian: apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh database on the local PostgreSQL, dropped afterwards."""
    with fresh_postgres("fleet_test", lambda problem: missing_service(f"{problem}; install and start it to run this test")) as url:
        yield url
