"""`free_port()` keeps out of the range outgoing connections take their local ports from."""

from __future__ import annotations

import socket

import pytest

from tests import ports


def test_free_ports_are_outside_the_ephemeral_range_and_bindable() -> None:
    low, high = ports.ephemeral_ports()
    chosen = {ports.free_port() for _ in range(200)}
    assert not [p for p in chosen if low <= p <= high], (low, high)
    for port in list(chosen)[:20]:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))


def test_without_room_outside_the_range_the_kernel_chooses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ports, "ephemeral_ports", lambda: (ports.LOWEST_TEST_PORT, 65535))
    port = ports.free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_each_xdist_worker_draws_from_ports_of_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "2")
    for worker, remainder in (("gw0", 0), ("gw1", 1), ("gw3", 1)):
        monkeypatch.setenv("PYTEST_XDIST_WORKER", worker)
        assert ports.worker_share() == (remainder, 2)
        assert {ports.free_port() % 2 for _ in range(100)} == {remainder}
    monkeypatch.delenv("PYTEST_XDIST_WORKER")
    assert ports.worker_share() == (0, 1)
