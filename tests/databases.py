"""Fresh PostgreSQL databases for tests and benchmarks: created on the local server (trust
auth, user postgres), dropped afterwards, whatever happened in between."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator

POSTGRES_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres connect_timeout=3"


@contextlib.contextmanager
def fresh_postgres(prefix: str, unreachable: Callable[[str], object]) -> Iterator[str]:
    """Yield the SQLAlchemy URL of a new database named `<prefix>_<random>`. When PostgreSQL
    cannot be reached, `unreachable` is called with a message saying so (it must raise or exit)."""
    import psycopg  # in the `postgres` extra: imported here so SQLite-only runs do without it

    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(POSTGRES_ADMIN, autocommit=True)
    except psycopg.OperationalError as exc:
        unreachable(f"PostgreSQL is not reachable on 127.0.0.1:5432 as user postgres ({exc})")
        raise
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
