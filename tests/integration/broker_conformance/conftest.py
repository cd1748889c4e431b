"""Fixtures of the conformance modules: each test runs once on the embedded broker (`fleet
broker`, a real process) and once on a Mosquitto process, one of each shared by the whole
package as the single module before the split shared them; `prefix` keeps tests' topics apart.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.harness import Broker
from tests.integration.broker_conformance.mqtt_kit import running


@pytest.fixture(scope="package", params=["amqtt", "mosquitto"])
def broker(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    with running(Broker(request.param, tmp_path_factory.mktemp(f"conformance-{request.param}"))) as started:
        yield started


@pytest.fixture
def prefix() -> str:
    """A topic prefix of this test's own."""
    return f"conf/{uuid.uuid4().hex[:8]}"
