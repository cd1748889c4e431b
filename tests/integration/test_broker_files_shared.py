"""Two controllers on one PostgreSQL keep one set of broker files in a shared folder (as
deploy/compose.yaml has them): they write one at a time, each after reading what the other
committed, so concurrent provisioning leaves no identity out of the files."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from config.settings import load_settings
from controller.db import create_sessionmaker, open_database
from controller.services.identities import BROKER_FILES_LOCK, add_identity, apply_to_broker
from schemas.api import IdentityCreate
from tests.harness import wait_for

pytestmark = pytest.mark.integration


def test_a_controller_waits_while_another_writes_the_files(postgres_url: str, tmp_path: Path) -> None:
    """While another controller holds the broker files' lock, apply_to_broker writes nothing;
    once it is released, it writes."""
    settings = load_settings(database_url=postgres_url, data_dir=str(tmp_path), nats_auth_file=str(tmp_path / "nats.conf"))
    engine = open_database(postgres_url)
    sessions = create_sessionmaker(engine)
    try:
        with sessions() as session:
            add_identity(session, IdentityCreate(name="pc-1"))
        other = engine.connect()
        transaction = other.begin()
        other.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": BROKER_FILES_LOCK})
        outcomes: list[str] = []

        def apply() -> None:
            with sessions() as session:
                outcomes.append(apply_to_broker(session, settings))

        writer = threading.Thread(target=apply)
        writer.start()
        wait_for(lambda: _waiting_on_advisory_lock(engine), 10, what="the writer waiting on the lock")
        assert not (tmp_path / "nats.conf").exists() and outcomes == []
        transaction.commit()
        other.close()
        writer.join(20)
        assert outcomes and outcomes[0].startswith("written")
        assert '"pc-1"' in (tmp_path / "nats.conf").read_text()
    finally:
        engine.dispose()


def test_concurrent_provisioning_on_two_controllers_leaves_no_one_out(postgres_url: str, tmp_path: Path) -> None:
    files = {"broker_password_file": str(tmp_path / "passwd"), "broker_acl_file": str(tmp_path / "acl"),
             "nats_auth_file": str(tmp_path / "nats.conf")}
    settings = load_settings(database_url=postgres_url, data_dir=str(tmp_path), **files)
    engines = [open_database(postgres_url) for _ in range(2)]
    try:
        def provision(controller: int) -> None:
            sessions = create_sessionmaker(engines[controller])
            for number in range(8):
                with sessions() as session:
                    add_identity(session, IdentityCreate(name=f"pc-{controller}-{number}"))
                    apply_to_broker(session, settings)

        threads = [threading.Thread(target=provision, args=(c,)) for c in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        names = {f"pc-{c}-{n}" for c in range(2) for n in range(8)}
        passwd = {line.split(":")[0] for line in (tmp_path / "passwd").read_text().splitlines()}
        assert passwd == names
        nats = (tmp_path / "nats.conf").read_text()
        assert all(f'user: "{name}"' in nats for name in names)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["acl", "nats.conf", "passwd"]  # no temporary left
    finally:
        for engine in engines:
            engine.dispose()


def _waiting_on_advisory_lock(engine: Engine) -> bool:
    """Whether a session of this database waits for the broker files' lock."""
    with engine.connect() as connection:
        waiting = connection.execute(text(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND objid = :key "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        ), {"key": BROKER_FILES_LOCK}).scalar_one()
    return bool(waiting)
