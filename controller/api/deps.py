"""FastAPI dependencies: a database session per request and the services' MQTT publisher.

`SessionDep` is a write session (on SQLite its transaction takes the write lock up front);
`ReadSessionDep` a read session for routes that only read (GET), which never waits for that
lock (docs/architecture.md#rest-and-sqlite-concurrency)."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Annotated

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session, sessionmaker

from config.settings import FleetSettings
from controller.services.publisher import Publisher


@asynccontextmanager
async def _session(sessions: sessionmaker[Session]) -> AsyncIterator[Session]:
    """A session opened and (when its transaction already ended) closed in the event loop:
    neither needs I/O then, and a sync dependency would cost two worker-thread hops."""
    session = sessions()
    try:
        yield session
    finally:
        if session.in_transaction():
            await run_in_threadpool(session.close)  # its rollback may wait for the database
        else:
            session.close()


async def get_session(request: Request) -> AsyncIterator[Session]:
    async with _session(request.app.state.sessions) as session:
        yield session


@contextmanager
def write_turn(request: Request, session: Session) -> Iterator[None]:
    """Run a route's write transaction in its turn among the REST writers of this process (the
    ingest writer never takes this lock). SQLite's busy handler retries a locked database by
    sleeping 1, 2, 5, 10 … ms, so many threads polling for its lock wait long and unfairly;
    here they queue on a lock that wakes the next one as soon as the holder is done, and only
    the holder contends for SQLite's own lock. The transaction is ended before the turn is:
    committed by the service, or rolled back here when it failed."""
    gate: threading.Lock = request.app.state.api_write_gate
    with gate:
        try:
            yield
        finally:
            if session.in_transaction():
                session.rollback()


async def get_read_session(request: Request) -> AsyncIterator[Session]:
    async with _session(request.app.state.read_sessions) as session:
        yield session


async def get_publisher(request: Request) -> Publisher:
    publisher: Publisher = request.app.state.mqtt
    return publisher


async def get_settings(request: Request) -> FleetSettings:
    settings: FleetSettings = request.app.state.settings
    return settings


SessionDep = Annotated[Session, Depends(get_session)]
ReadSessionDep = Annotated[Session, Depends(get_read_session)]
SettingsDep = Annotated[FleetSettings, Depends(get_settings)]
PublisherDep = Annotated[Publisher, Depends(get_publisher)]
