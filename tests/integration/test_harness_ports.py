"""The harness survives a port taken between `free_port()` and the bind of the process it
starts (issue 13: setup errors under load): by an outgoing connection's local port or by
another program's listener, the broker or controller moves to a new port and starts."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests import harness
from tests.harness import Broker, Controller, Process
from tests.ports import free_port, listens

pytestmark = pytest.mark.integration


def outgoing_connection() -> tuple[socket.socket, socket.socket, int]:
    """A listener and a connection to it: the connection's local port is taken, though nothing listens there."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    client = socket.create_connection(server.getsockname())
    return server, client, client.getsockname()[1]


@pytest.fixture
def taken_port() -> Iterator[int]:
    server, client, port = outgoing_connection()
    yield port
    client.close()
    server.close()


@pytest.fixture
def first_port_is(monkeypatch: pytest.MonkeyPatch) -> Callable[[int], None]:
    """Make the harness's next `free_port()` answer `port`, as if it was free a moment ago."""

    def force(port: int) -> None:
        answers = iter([port])
        monkeypatch.setattr(harness, "free_port", lambda: next(answers, None) or free_port())

    return force


@pytest.mark.parametrize("kind", ["amqtt", "mosquitto"])
def test_broker_moves_off_a_port_an_outgoing_connection_took(
    kind: str, taken_port: int, first_port_is: Callable[[int], None], tmp_path: Path, _processes: list[Process]
) -> None:
    first_port_is(taken_port)
    broker = Broker(kind, tmp_path)
    _processes.append(broker.process)
    assert broker.port == taken_port
    broker.start()
    assert broker.port != taken_port and str(broker.port) in broker.url
    assert broker.process.popen is not None and listens(broker.process.popen.pid, broker.port)
    assert "already in use" in broker.process.log_path.read_text()  # it did try the taken port first


def test_broker_is_not_fooled_by_another_programs_listener(
    first_port_is: Callable[[int], None], tmp_path: Path, _processes: list[Process]
) -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        first_port_is(other.getsockname()[1])
        broker = Broker("amqtt", tmp_path)
        _processes.append(broker.process)
        broker.start()
        assert broker.port != other.getsockname()[1]
        assert broker.process.popen is not None and listens(broker.process.popen.pid, broker.port)


def test_controller_moves_off_a_taken_api_port(
    taken_port: int, first_port_is: Callable[[int], None], tmp_path: Path, _processes: list[Process]
) -> None:
    broker = Broker("amqtt", tmp_path)
    _processes.append(broker.process)
    broker.start()
    first_port_is(taken_port)
    controller = Controller(broker, tmp_path)
    _processes.append(controller.process)
    controller.start()
    assert controller.port != taken_port
    assert controller.api.get("/healthz").json()["mqtt_connected"] is True


def test_a_restarted_broker_keeps_its_port_and_says_so_when_it_is_gone(tmp_path: Path, _processes: list[Process]) -> None:
    broker = Broker("amqtt", tmp_path)
    _processes.append(broker.process)
    broker.start()
    port = broker.port
    broker.kill()
    with socket.socket() as thief:
        thief.bind(("127.0.0.1", port))
        thief.listen()
        with pytest.raises(AssertionError, match="already in use"):
            broker.start()
    assert broker.port == port  # its clients know this port: no silent move on a restart

