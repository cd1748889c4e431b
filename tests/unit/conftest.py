"""Fixtures of the unit tier: a real, freshly migrated SQLite database per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from controller.db import create_db_engine, create_sessionmaker, migrate


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    instance = create_db_engine(f"sqlite:///{tmp_path / 'db' / 'controller.db'}")
    migrate(instance)
    yield instance
    instance.dispose()


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    return create_sessionmaker(engine)
