"""FastAPI dependencies: a database session per request and the services' MQTT publisher.

`SessionDep` is a write session (on SQLite its transaction takes the write lock up front);
`ReadSessionDep` a read session for routes that only read (GET), which never waits for that
lock (docs/architecture.md#rest-and-sqlite-concurrency)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from config.settings import FleetSettings
from controller.services.publisher import Publisher


def get_session(request: Request) -> Iterator[Session]:
    with request.app.state.sessions() as session:
        yield session


def get_read_session(request: Request) -> Iterator[Session]:
    with request.app.state.read_sessions() as session:
        yield session


def get_publisher(request: Request) -> Publisher:
    publisher: Publisher = request.app.state.mqtt
    return publisher


def get_settings(request: Request) -> FleetSettings:
    settings: FleetSettings = request.app.state.settings
    return settings


SessionDep = Annotated[Session, Depends(get_session)]
ReadSessionDep = Annotated[Session, Depends(get_read_session)]
SettingsDep = Annotated[FleetSettings, Depends(get_settings)]
PublisherDep = Annotated[Publisher, Depends(get_publisher)]
