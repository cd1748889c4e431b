"""Fixtures of the unit tier: a real, freshly migrated SQLite database per test, the real REST
app on one (its broker does not exist), and an in-memory stand-in for the MQTT publish side."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from config.settings import FleetSettings
from controller.app import create_app
from controller.db import create_db_engine, create_sessionmaker, migrate
from tests.cli_runner import fleet  # noqa: F401  (the in-process `fleet` fixture)
from tests.services_kit import ADMIN_TOKEN, FakePublisher, unused_port


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    instance = create_db_engine(f"sqlite:///{tmp_path / 'db' / 'controller.db'}")
    migrate(instance)
    yield instance
    instance.dispose()


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    return create_sessionmaker(engine)


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    """The real app on SQLite; its broker does not exist, which must not stop it from starting."""
    settings = FleetSettings(
        data_dir=tmp_path / "data",
        database_url=f"sqlite:///{tmp_path / 'data' / 'controller.db'}",
        mqtt_url=f"mqtt://operator:hunter2@127.0.0.1:{unused_port()}",
        reconnect_max_delay=1,
        admin_token=ADMIN_TOKEN,
    )
    with TestClient(create_app(settings), headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as test_client:
        yield test_client


@pytest.fixture
def publisher() -> FakePublisher:
    return FakePublisher()
