"""The secure local set-up `fleet up` runs with: broker logins for the controller and the local
device, provisioned once (only their hashes in the database, the passwords in an owner-only
file in the data dir so the next `fleet up` can connect again), and the embedded broker's
password and ACL files next to them. Nobody else gets in: anonymous access stays off."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from broker.credentials import verify_password, write_atomically
from config.settings import FleetSettings
from controller.db import create_sessionmaker, open_database
from controller.models import MqttIdentity
from controller.services.identities import add_identity, apply_to_broker, revoke_identity
from schemas.api import IdentityCreate

CONTROLLER_USER = "fleet-controller"
CREDENTIALS_FILE = "local-credentials.json"


@dataclass(frozen=True)
class LocalLogins:
    controller: str  # password of CONTROLLER_USER
    device: str | None  # password of the local device, when there is one


def broker_files(data_dir: Path) -> tuple[Path, Path]:
    return data_dir / "broker" / "passwd", data_dir / "broker" / "acl"


def ensure_local_logins(settings: FleetSettings, device_id: str | None) -> LocalLogins:
    """Provision what is missing (or no longer matches) and write the broker files."""
    path = settings.data_dir / CREDENTIALS_FILE
    stored: dict[str, str] = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    wanted: list[tuple[str, str, list[str]]] = [(CONTROLLER_USER, "controller", [])] + ([(device_id, "device", list(settings.groups))] if device_id else [])
    engine = open_database(settings.resolved_database_url)  # DatabaseSetupError: one clear line
    try:
        with create_sessionmaker(engine)() as session:
            for name, role, groups in wanted:
                identity = session.get(MqttIdentity, name)
                usable = identity is not None and identity.revoked_at is None and identity.groups == groups
                if usable and name in stored and verify_password(stored[name], identity.password_hash):  # type: ignore[union-attr]
                    continue
                if identity is not None and identity.revoked_at is None:
                    revoke_identity(session, name)
                _identity, stored[name] = add_identity(session, IdentityCreate(name=name, role=role, groups=groups))  # type: ignore[arg-type]
            apply_to_broker(session, settings)
    finally:
        engine.dispose()
    write_atomically(path, json.dumps(stored))
    return LocalLogins(controller=stored[CONTROLLER_USER], device=stored.get(device_id) if device_id else None)
