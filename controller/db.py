"""Database engine and sessions for the controller (SQLite by default, PostgreSQL to scale out).

Sync SQLAlchemy 2: REST routes are plain `def` run in FastAPI's threadpool and MQTT callbacks
run in paho's network thread, so every unit of work opens its own short `Session`.

The schema is created and upgraded by alembic (`controller/migrations`) at start-up.

SQLite gets WAL, a busy timeout and foreign keys on every connection. Sessions come in two
kinds (docs/architecture.md#rest-and-sqlite-concurrency):

- write sessions (`create_sessionmaker`): their transactions start with `BEGIN IMMEDIATE`, so
  the write lock is taken up front and two threads that read a task and then update it run one
  after the other instead of failing with "database is locked" or losing an update. While
  another writer holds the lock, `BEGIN IMMEDIATE` is retried every millisecond or two (see
  `_begin_write`);
- read sessions (`create_read_sessionmaker`): a plain deferred `BEGIN`, which under WAL reads
  a snapshot and never waits for (or blocks) a writer. They refuse to write.

On PostgreSQL the services lock rows with `SELECT … FOR UPDATE`; a read session is an ordinary one.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.util.exc import CommandError
from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import ORMExecuteState, Session, sessionmaker

from controller.warn_once import SESSION_KEY, WarnOnce
from schemas.errors import ConfigError, FleetError

SQLITE_BUSY_TIMEOUT_MS = 30_000
WRITE_RETRY_MAX_PAUSE = 0.002  # seconds between two tries of BEGIN IMMEDIATE, at most
READ_ONLY = "fleet_read_only"  # execution option (and Session.info key) of read sessions
MIGRATIONS = Path(__file__).parent / "migrations"
FIRST_REVISION = "0001"  # the schema release 0.1.0 created without alembic
# pg_advisory_xact_lock key held while migrating: controllers started together on one fresh
# PostgreSQL database migrate one after the other (the second finds the schema current).
MIGRATION_LOCK_KEY = 0x666C656574  # "fleet"


def safe_url(url: str) -> str:
    """The database URL with its password masked, for logs and error messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL is shown by its scheme only
        return url.split(":", 1)[0] + ":…"


class DatabaseSetupError(ConfigError):
    """The database named by FLEET_DATABASE_URL cannot be used; the message is one line that
    names the setting and the fix."""


_DRIVER_EXTRAS = {"psycopg": "postgres", "psycopg2": "postgres"}


def _describe_failure(url: str, exc: BaseException) -> str:
    if isinstance(exc, ArgumentError):
        return ("FLEET_DATABASE_URL is not a SQLAlchemy database URL; set it to e.g. "
                "sqlite:///path/controller.db or postgresql+psycopg://user:password@host/dbname, or unset it")
    if isinstance(exc, ModuleNotFoundError):
        module = (exc.name or "").split(".")[0]
        extra = _DRIVER_EXTRAS.get(module)
        fix = f"pip install -e '.[{extra}]'" if extra else f"pip install {module}"
        return (f"the database driver {module!r} for FLEET_DATABASE_URL ({safe_url(url)}) is not installed; "
                f"install it with {fix}, or unset FLEET_DATABASE_URL to use SQLite")
    text_ = str(exc).strip()
    first_line = text_.splitlines()[0] if text_ else type(exc).__name__
    return f"cannot open the database {safe_url(url)}: {first_line}; check FLEET_DATABASE_URL"


def open_database(url: str) -> Engine:
    """An engine whose tables exist and are current, or `DatabaseSetupError` with one clear
    line (a malformed URL, a missing driver, an unreachable server) instead of a traceback."""
    try:
        engine = create_db_engine(url)
    except (SQLAlchemyError, ImportError, ValueError, OSError) as exc:
        raise DatabaseSetupError(_describe_failure(url, exc)) from None
    try:
        migrate(engine)
    except CommandError as exc:  # alembic: the database names a revision this release lacks
        engine.dispose()
        raise DatabaseSetupError(
            f"the database {safe_url(url)} was migrated by a newer mqtt-fleet ({exc}); upgrade this "
            "installation (pip install -U mqtt-fleet), or point FLEET_DATABASE_URL at another database"
        ) from None
    except (SQLAlchemyError, ImportError, ValueError, OSError) as exc:
        engine.dispose()
        raise DatabaseSetupError(_describe_failure(url, exc)) from None
    return engine


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # Take transaction control away from the sqlite3 module; the "begin" hook below starts them.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        _set_wal(cursor)
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
    finally:
        cursor.close()


def _set_wal(cursor: Any) -> None:
    """`PRAGMA journal_mode = WAL`, tried again while another process holds the file. Switching
    a new file to WAL needs an exclusive lock and SQLite answers "locked" at once, without its
    busy handler, when two processes open a fresh file together (two controllers starting)."""
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
        time.sleep(0.01)


def _sqlite_on_begin(connection: Any) -> None:
    if connection.get_execution_options().get(READ_ONLY):
        connection.exec_driver_sql("BEGIN")  # deferred: a WAL snapshot, no lock
    else:
        _begin_write(connection)


def _begin_write(connection: Any) -> None:
    """`BEGIN IMMEDIATE`, tried again every 0.1–2 ms while another connection holds the write
    lock, for up to the busy timeout. SQLite's own busy handler sleeps 1, 2, 5 … 50, 100 ms
    between tries: a REST write waiting behind the ingest writer, which starts its next batch a
    few milliseconds after committing one, kept missing those gaps and waited for most of its
    request (63 % of a batch create's time under load)."""
    dbapi_connection: sqlite3.Connection = connection.connection.driver_connection
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    pause = 0.0001
    dbapi_connection.execute("PRAGMA busy_timeout = 0")
    try:
        while True:
            try:
                connection.exec_driver_sql("BEGIN IMMEDIATE")
                return
            except OperationalError as exc:
                if "locked" not in str(exc.orig) or time.monotonic() >= deadline:
                    raise
            time.sleep(pause)
            pause = min(pause * 2, WRITE_RETRY_MAX_PAUSE)
    finally:
        dbapi_connection.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")


def create_db_engine(url: str) -> Engine:
    """An engine for a SQLAlchemy URL; for a SQLite file its parent directory is created."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True)
    database = parsed.database
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url)
    event.listen(engine, "connect", _sqlite_on_connect)
    event.listen(engine, "begin", _sqlite_on_begin)
    return engine


def migration_config(connection: Any) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def migrate(engine: Engine, revision: str = "head") -> None:
    """Create the controller's tables, or upgrade them to this version's schema, keeping every
    row. A database made by release 0.1.0 (tables but no alembic version) is recognised first.

    Several controllers may start at once on one database: on PostgreSQL the whole upgrade runs
    under a transaction-scoped advisory lock (two concurrent CREATE TABLEs of one name fail with
    a UniqueViolation on pg_type); on SQLite the transaction begins with BEGIN IMMEDIATE (the
    connection's "begin" hook), which takes the write lock before the version is read."""
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        config = migration_config(connection)
        tables = inspect(connection)
        if tables.has_table("tasks") and not tables.has_table("alembic_version"):
            command.stamp(config, FIRST_REVISION)
        command.upgrade(config, revision)


def create_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    """Sessions for one controller; they share its `WarnOnce` through `Session.info`."""
    return sessionmaker(bind=engine, expire_on_commit=False, info={SESSION_KEY: WarnOnce()})


class ReadOnlySessionError(FleetError):
    """Code running in a read session tried to write: a bug, so it fails loudly."""


def _refuse_flush(session: Session, _context: Any, _instances: Any) -> None:
    if session.new or session.dirty or session.deleted:
        raise ReadOnlySessionError("a read-only session tried to write; use a write session for this work")


def _refuse_dml(state: ORMExecuteState) -> None:
    if not state.is_select:
        raise ReadOnlySessionError("a read-only session tried to write; use a write session for this work")


def create_read_sessionmaker(sessions: sessionmaker[Session]) -> sessionmaker[Session]:
    """Sessions for work that only reads (GET routes, token checks), bound like `sessions`.

    On SQLite they begin deferred, so they neither wait for the write lock nor hold it while
    the ingest writer or a POST needs it. Flushing changes or running an INSERT/UPDATE/DELETE
    in one raises `ReadOnlySessionError`.
    """
    engine = sessions.kw["bind"]
    read = sessionmaker(
        bind=engine.execution_options(**{READ_ONLY: True}),
        expire_on_commit=False,
        info={**sessions.kw.get("info", {}), READ_ONLY: True},
    )
    event.listen(read, "before_flush", _refuse_flush)
    event.listen(read, "do_orm_execute", _refuse_dml)
    return read


def database_reachable(engine: Engine) -> bool:
    """Whether a trivial query succeeds right now (for the health check); a read, so it never
    waits for SQLite's write lock."""
    try:
        with engine.execution_options(**{READ_ONLY: True}).connect() as connection:
            connection.execute(text("SELECT 1"))
        return True
    except Exception:
        return False
