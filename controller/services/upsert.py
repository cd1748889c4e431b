"""INSERT … ON CONFLICT DO NOTHING for rows several controllers may insert at the same moment
(a device first seen by both, a task both hear of first from its device, a timeline event both
record): the loser's insert becomes a no-op instead of a unique violation that fails its whole
ingest batch (docs/architecture.md#several-controllers).

PostgreSQL and SQLite both have the clause; SQLAlchemy spells it per dialect.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import inspect
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from controller.models import Base


def insert_ignore(session: Session, model: type[Base], rows: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> int:
    """Insert `rows` (one mapping, or many as an executemany) in the caller's transaction,
    skipping each that collides with a row already there (or one another transaction is
    inserting: PostgreSQL waits for it to end). Returns how many were inserted.

    The count comes from RETURNING, not the cursor's rowcount: psycopg reports -1 for these
    statements, which made every device look already known on PostgreSQL."""
    return len(inserted_keys(session, model, rows))


def inserted_keys(session: Session, model: type[Base], rows: Mapping[str, Any] | Sequence[Mapping[str, Any]]
                  ) -> list[tuple[Any, ...]]:
    """`insert_ignore` answering the primary keys of the rows it inserted (a job's runs: only
    those are published)."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert(model) if dialect == "postgresql" else sqlite.insert(model)
    statement = insert.on_conflict_do_nothing().returning(*inspect(model).primary_key)
    session.flush()  # pending ORM rows first, as session.execute would
    if isinstance(rows, Mapping):
        return [tuple(row) for row in session.connection().execute(statement, dict(rows)).all()]
    if not rows:
        return []
    return [tuple(row) for row in session.connection().execute(statement, [dict(row) for row in rows]).all()]
