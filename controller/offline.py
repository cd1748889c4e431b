"""Administration run on the controller's host straight against its database, without a
running controller: the first API token, and broker identities. The CLI calls these; the SQL
stays in the controller's services."""

from __future__ import annotations

from datetime import datetime

from config.settings import FleetSettings
from controller.db import create_sessionmaker, open_database
from controller.models import ApiToken, MqttIdentity
from controller.services.identities import add_identity, apply_to_broker
from controller.services.tokens import create_token
from schemas.api import IdentityCreate


def create_api_token(
    settings: FleetSettings, name: str, scope: str, expires_at: datetime | None = None
) -> tuple[ApiToken, str]:
    """A new API token in the controller's database and its secret (shown once). Raises
    `DatabaseSetupError` when FLEET_DATABASE_URL cannot be used."""
    engine = open_database(settings.resolved_database_url)
    try:
        with create_sessionmaker(engine)() as session:
            return create_token(session, name, scope, expires_at)
    finally:
        engine.dispose()


def provision_identity(settings: FleetSettings, body: IdentityCreate) -> tuple[MqttIdentity, str, str]:
    """A new broker identity, its secret (shown once) and what applying the broker files did.
    Raises `DatabaseSetupError`, or `ServiceError` when the name is taken."""
    engine = open_database(settings.resolved_database_url)
    try:
        with create_sessionmaker(engine)() as session:
            identity, secret = add_identity(session, body)
            return identity, secret, apply_to_broker(session, settings)
    finally:
        engine.dispose()
