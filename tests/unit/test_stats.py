"""The statistics service on a real SQLite database (medians of odd and even counts, groups
without a key, windows and filters, clear errors for bad windows), the per-app Prometheus
registry and its SQL cache, and /healthz's 503 when the broker link keeps dropping."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.orm import Session, sessionmaker

from controller.metrics import FleetMetrics, SqlSnapshot
from controller.models import Task
from controller.services import stats
from controller.services.errors import InvalidRequestError
from controller.services.finished import Finished
from controller.services.task_rows import platform_of, task_values
from schemas.stats import StatsFilters
from tests.services_kit import go_online

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)


def _add(sessions: sessionmaker[Session], rows: list[tuple[str, str, str, float | None, dict[str, Any]]]) -> None:
    """(device, type, status, run seconds or None, params), created 10 minutes before NOW."""
    with sessions() as session:
        for n, (device, type_, status, seconds, params) in enumerate(rows):
            values = task_values(id=f"t{n}", device_id=device, type=type_, origin="api", params=params,
                                 account=params.get("account"), created_at=NOW - timedelta(minutes=10))
            values["params"] = {k: v for k, v in params.items() if k != "account"}
            values["status"] = status
            if seconds is not None:
                values["started_at"] = NOW - timedelta(minutes=5)
                values["finished_at"] = values["started_at"] + timedelta(seconds=seconds)
            session.add(Task(**values))
        session.commit()


def test_counts_rates_and_medians(sessions: sessionmaker[Session]) -> None:
    go_online(sessions, "pc-a")
    go_online(sessions, "pc-b")
    chat = {"platform": "reference", "account": "acc-1"}
    _add(sessions, [
        ("pc-a", "echo", "succeeded", 1.0, {}), ("pc-a", "echo", "succeeded", 3.0, {}),
        ("pc-a", "echo", "failed", 50.0, {}), ("pc-a", "echo", "queued", None, {}),
        ("pc-b", "chat", "succeeded", 2.0, chat), ("pc-b", "chat", "succeeded", 4.0, chat),
        ("pc-b", "chat", "succeeded", 9.0, chat), ("pc-b", "chat", "rejected", None, chat),
    ])
    window = stats.resolve_window("1h", None, None, now=NOW)
    with sessions() as session:
        out = stats.compute(session, window, StatsFilters())
    assert out.total == 8 and out.finished == 7 and out.succeeded == 5
    assert out.by_state == {"failed": 1, "queued": 1, "rejected": 1, "succeeded": 5}
    assert out.by_type == {"chat": 4, "echo": 4}
    devices = {g.key: g for g in out.per_device}
    assert devices["pc-a"].median_seconds == pytest.approx(2.0, abs=0.001)  # even count: mean of 1 and 3
    assert devices["pc-a"].success_rate == round(2 / 3, 6) and devices["pc-a"].finished == 3
    assert devices["pc-b"].median_seconds == pytest.approx(4.0, abs=0.001)  # odd count: the middle one
    assert [g.key for g in out.per_platform] == ["reference"] and [g.key for g in out.per_account] == ["acc-1"]
    with sessions() as session:
        echo = stats.compute(session, window, StatsFilters(type="echo", device_id="pc-a"))
        later = stats.compute(session, stats.resolve_window("1h", None, None, now=NOW + timedelta(hours=2)),
                              StatsFilters())
    assert echo.total == 4 and echo.per_platform == [] and echo.per_account == []
    assert later.total == 0 and later.success_rate is None and later.per_device == []


def test_bad_windows_say_what_to_fix() -> None:
    with pytest.raises(InvalidRequestError, match="not both"):
        stats.resolve_window("1h", NOW, None)
    with pytest.raises(InvalidRequestError, match="must be before"):
        stats.resolve_window(None, NOW, NOW - timedelta(seconds=1))
    with pytest.raises(InvalidRequestError, match="1h, 24h, 7d"):
        stats.resolve_window("2d", None, None)
    with pytest.raises(InvalidRequestError, match="too early"):
        stats.resolve_window("7d", None, datetime(1, 1, 2, tzinfo=timezone.utc))
    span = stats.resolve_window(None, None, None, now=NOW)
    assert span.until - span.since == timedelta(hours=24)


def test_platform_column_from_params() -> None:
    assert platform_of({"platform": "douyin", "to": "x"}) == "douyin"
    assert platform_of({"platform": 3}) is None and platform_of(None) is None and platform_of({}) is None


def test_stats_route_refuses_bad_input(client: TestClient) -> None:
    assert client.get("/api/v1/stats", params={"window": "5m"}).status_code == 422
    both = client.get("/api/v1/stats", params={"window": "1h", "since": "2026-11-30T00:00:00Z"})
    assert both.status_code == 422 and "not both" in both.json()["detail"]
    fine = client.get("/api/v1/stats")
    assert fine.status_code == 200 and fine.json()["total"] == 0


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_metrics_registry_per_app_and_cached_sql(sessions: sessionmaker[Session]) -> None:
    go_online(sessions, "pc-a")
    first = FleetMetrics(sessions, lambda: None, cache_seconds=60)
    second = FleetMetrics(sessions, lambda: None, cache_seconds=60)  # no clash with the first
    first.observe([Finished("echo", "succeeded", 0.3), Finished("echo", "rejected", None)])
    from prometheus_client import generate_latest

    one, two = _samples(generate_latest(first.registry).decode()), _samples(generate_latest(second.registry).decode())
    assert one[("fleet_task_duration_seconds_count", (("status", "succeeded"), ("type", "echo")))] == 1
    assert one[("fleet_tasks_finished_total", (("status", "rejected"), ("type", "echo")))] == 1
    assert ("fleet_task_duration_seconds_count", (("status", "succeeded"), ("type", "echo"))) not in two
    assert one[("fleet_devices", (("presence", "online"),))] == 1
    clock = [0.0]
    snapshot = SqlSnapshot(sessions, ttl=5, clock=lambda: clock[0])
    for _ in range(10):
        snapshot.get()
    assert snapshot.queries == 1
    clock[0] = 6.0
    snapshot.get()
    assert snapshot.queries == 2


def test_metrics_needs_a_token_and_healthz_says_unhealthy_when_flapping(client: TestClient) -> None:
    assert client.get("/metrics", headers={"Authorization": ""}).status_code == 401
    assert "fleet_mqtt_connected 0.0" in client.get("/metrics").text
    mqtt = client.app.state.mqtt  # type: ignore[attr-defined]
    for _ in range(3):
        mqtt._link.dropped()
    health = client.get("/healthz")
    assert health.status_code == 200 and health.json()["problem"] == "broker_down"  # not connected comes first
    mqtt._connected.set()
    mqtt._subscriber.granted = True
    health = client.get("/healthz")
    assert health.status_code == 503, health.text
    assert health.json()["status"] == "unhealthy" and health.json()["problem"] == "broker_flapping"
    assert "client id" in health.json()["reason"]


def test_migration_0011_fills_in_the_platform_of_older_tasks(tmp_path: Any) -> None:
    from sqlalchemy import text

    from controller.db import create_db_engine, migrate

    engine = create_db_engine(f"sqlite:///{tmp_path / 'old.db'}")
    migrate(engine, "0010")
    with engine.begin() as connection:
        connection.execute(text("INSERT INTO devices (id, status, groups, created_at) VALUES ('pc-a', 'online', '[]', "
                                "'2026-11-30 10:00:00')"))
        for n, params in enumerate(['{"platform": "douyin", "to": "x"}', '{"message": "m"}', '{"platform": 7}']):
            connection.execute(text(
                "INSERT INTO tasks (id, device_id, type, params, status, origin, created_at, updated_at, dispatch_count, "
                "attempt, max_retries, retry_backoff, resends) VALUES (:id, 'pc-a', 'chat', :params, 'queued', 'api', "
                "'2026-11-30 10:00:00', '2026-11-30 10:00:00', 0, 1, 0, 5.0, 0)"), {"id": f"t{n}", "params": params})
    migrate(engine)
    with engine.connect() as connection:
        found = dict(connection.execute(text("SELECT id, platform FROM tasks ORDER BY id")).all())
        indexes = {row[1] for row in connection.execute(text("PRAGMA index_list('tasks')"))}
    engine.dispose()
    assert found == {"t0": "douyin", "t1": None, "t2": None}
    assert {"ix_tasks_stats", "ix_tasks_platform"} <= indexes
