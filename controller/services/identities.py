"""MQTT identities: provisioning and revoking devices, the controller and operators on the broker.

Each change rewrites the Mosquitto password and ACL files the settings name and makes that
Mosquitto reload them (SIGHUP via its pid file), so a revocation takes effect without a restart.
For a broker the controller does not manage, the files are returned for the operator to install.
"""

from __future__ import annotations

import logging
import os
import signal
from datetime import datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from broker.credentials import Identity, acl_file, hash_password, new_secret, password_file, write_atomically
from config.settings import FleetSettings
from controller.models import Device, DeviceConnection, MqttIdentity
from controller.services.errors import ConflictError, NotFoundError
from schemas.api import IdentityCreate
from schemas.common import utcnow

log = logging.getLogger(__name__)


def _live(session: Session) -> list[Identity]:
    rows = session.scalars(select(MqttIdentity).where(MqttIdentity.revoked_at.is_(None)))
    return [Identity(r.name, r.role, r.password_hash, list(r.groups or [])) for r in rows]


def broker_files(session: Session) -> tuple[str, str]:
    """(password file, ACL file) for every identity that is not revoked."""
    identities = _live(session)
    return password_file(identities), acl_file(identities)


def apply_to_broker(session: Session, settings: FleetSettings) -> str:
    """Write the files and reload the broker; says what happened (or what the operator must do)."""
    if settings.broker_password_file is None or settings.broker_acl_file is None:
        return ("this controller manages no broker files (FLEET_BROKER_PASSWORD_FILE, FLEET_BROKER_ACL_FILE): "
                "install the files from GET /api/v1/identities/broker-files on your broker and reload it")
    passwords, acls = broker_files(session)
    write_atomically(settings.broker_password_file, passwords)
    write_atomically(settings.broker_acl_file, acls)
    return "written; " + _reload(settings.broker_pid_file)


def _reload(pid_file: Path | None) -> str:
    if pid_file is None:
        return "the embedded broker reads them as they change (for Mosquitto, set FLEET_BROKER_PID_FILE)"
    if not hasattr(signal, "SIGHUP"):
        return "reload the broker by hand (this OS has no SIGHUP)"
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, signal.SIGHUP)
    except (OSError, ValueError) as exc:
        log.warning("could not reload the broker via %s: %s", pid_file, type(exc).__name__)
        return f"the broker could not be reloaded via {pid_file} ({type(exc).__name__}); reload it by hand"
    return f"broker (pid {pid}) reloaded"


def add_identity(session: Session, body: IdentityCreate) -> tuple[MqttIdentity, str]:
    """A new identity and its secret (shown once; only the hash is kept)."""
    existing = session.get(MqttIdentity, body.name)
    if existing is not None and existing.revoked_at is None:
        raise ConflictError(f"{body.role} {body.name!r} is already provisioned; revoke it first to issue a new secret")
    secret = new_secret()
    if existing is None:
        existing = MqttIdentity(name=body.name)
        session.add(existing)
    existing.role, existing.groups = body.role, list(body.groups)
    existing.password_hash, existing.created_at, existing.revoked_at = hash_password(secret), utcnow(), None
    session.commit()
    log.info("%s %s provisioned", body.role, body.name)
    return existing, secret


def revoke_identity(session: Session, name: str, own_login: str | None = None) -> MqttIdentity:
    """Revoke `name`, unless it is `own_login`, the broker login this controller itself uses
    (revoking that would cut the controller off its own fleet)."""
    identity = session.get(MqttIdentity, name)
    if identity is None:
        raise NotFoundError(f"no MQTT identity {name!r}; list them with GET /api/v1/identities")
    if own_login is not None and name == own_login:
        raise ConflictError(
            f"{name!r} is the broker login this controller uses (FLEET_MQTT_URL); revoking it would cut the "
            "controller off the broker. Provision a new controller login, switch FLEET_MQTT_URL to it and "
            "restart the controller first"
        )
    if identity.revoked_at is None:
        identity.revoked_at = utcnow()
        if identity.role == "device":
            _take_offline(session, identity.name, identity.revoked_at)
        session.commit()
        log.info("%s %s revoked", identity.role, identity.name)
    return identity


def _take_offline(session: Session, device_id: str, at: datetime) -> None:
    """A revoked device is offline from now on: the broker refuses its logins, and even its will
    (its ACL is gone), so the controller would never hear of it otherwise."""
    device = session.get(Device, device_id, with_for_update=True)
    if device is None or device.status == "offline":
        return
    device.status, device.online_since, device.silent_after = "offline", None, None
    session.add(DeviceConnection(device_id=device_id, state="offline", session_id=device.session_id or "?", at=at,
                                 reason="revoked"))


def list_identities(session: Session) -> list[MqttIdentity]:
    return list(session.scalars(select(MqttIdentity).order_by(MqttIdentity.name)))
