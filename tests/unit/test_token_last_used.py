"""An API token's `last_used_at` is written at most once a minute (real SQLite), so REST reads
do not each take the database's write lock to record it."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import event

from controller.db import create_db_engine, create_sessionmaker, migrate
from controller.models import ApiToken
from controller.services import tokens
from schemas.common import utcnow


def test_last_used_at_is_written_at_most_once_a_minute(tmp_path: Path) -> None:
    engine = create_db_engine(f"sqlite:///{tmp_path / 'controller.db'}")
    migrate(engine)
    sessions = create_sessionmaker(engine)
    with sessions() as session:
        token, secret = tokens.create_token(session, "ci", "read")
    updates: list[str] = []
    event.listen(engine, "before_cursor_execute",
                 lambda _c, _cur, statement, *_a: updates.append(statement) if statement.startswith("UPDATE") else None)
    for _ in range(5):
        with sessions() as session:
            tokens.authenticate(session, secret)
    assert len(updates) == 1, updates
    with sessions() as session:  # a minute later it is written again
        stored = session.get(ApiToken, token.id)
        assert stored is not None and stored.last_used_at is not None
        stored.last_used_at = utcnow() - tokens.LAST_USED_PRECISION
        session.commit()
    with sessions() as session:
        tokens.authenticate(session, secret)
    assert len(updates) == 3, updates  # the test's own UPDATE, then authenticate's
    engine.dispose()
