"""MQTT identities: provisioning and revoking devices, the controller and operators on the broker.

Each change rewrites the broker files the settings name (Mosquitto's password and ACL files,
NATS's authorization file, or both) and makes the broker reload them (SIGHUP via its pid file),
so a revocation takes effect without a restart. For a broker the controller does not manage, the
files are returned for the operator to install.
"""

from __future__ import annotations

import logging
import os
import signal
from datetime import datetime
from pathlib import Path

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from broker.credentials import (
    Identity,
    acl_file,
    hash_for_brokers,
    new_secret,
    password_file,
    split_hashes,
    write_atomically,
)
from broker.nats_auth import nats_authorization
from config.settings import FleetSettings
from controller.models import Device, DeviceConnection, MqttIdentity
from controller.services.errors import ConflictError, NotFoundError
from schemas.api import IdentityCreate
from schemas.common import utcnow

log = logging.getLogger(__name__)


def _live(session: Session) -> list[Identity]:
    rows = session.scalars(select(MqttIdentity).where(MqttIdentity.revoked_at.is_(None)))
    identities = []
    for row in rows:
        mosquitto_hash, nats_hash = split_hashes(row.password_hash)
        identities.append(Identity(row.name, row.role, mosquitto_hash, list(row.groups or []), nats_hash))
    return identities


def broker_files(session: Session) -> tuple[str, str]:
    """(password file, ACL file) for every identity that is not revoked."""
    identities = _live(session)
    return password_file(identities), acl_file(identities)


def nats_file(session: Session) -> tuple[str, list[str]]:
    """(NATS authorization file, why each identity left out of it was left out)."""
    return nats_authorization(_live(session))


def apply_to_broker(session: Session, settings: FleetSettings) -> str:
    """Write the files and reload the broker; says what happened (or what the operator must do)."""
    password_path, acl_path, nats_path = settings.broker_password_file, settings.broker_acl_file, settings.nats_auth_file
    mosquitto = password_path is not None and acl_path is not None
    if not mosquitto and nats_path is None:
        return ("this controller manages no broker files (FLEET_BROKER_PASSWORD_FILE and FLEET_BROKER_ACL_FILE for "
                "Mosquitto, FLEET_NATS_AUTH_FILE for NATS): install the files from GET "
                "/api/v1/identities/broker-files on your broker and reload it")
    notes = ""
    _one_writer_at_a_time(session)
    if password_path is not None and acl_path is not None:
        passwords, acls = broker_files(session)
        write_atomically(password_path, passwords)
        write_atomically(acl_path, acls)
    if nats_path is not None:
        authorization, left_out = nats_file(session)
        write_atomically(nats_path, authorization)
        if left_out:
            log.warning("left out of the NATS authorization file: %s", "; ".join(left_out))
            notes = "; left out of the NATS file: " + "; ".join(left_out)
    session.commit()  # ends the transaction, and with it the lock
    return "written; " + _reload(settings.broker_pid_file, nats_only=not mosquitto) + notes


BROKER_FILES_LOCK = 0x666C6565  # "flee": the advisory lock key of the broker files


def _one_writer_at_a_time(session: Session) -> None:
    """Controllers sharing a database and a folder write the broker files one at a time (a
    PostgreSQL advisory lock held until the transaction ends), each reading the identities
    after the previous one wrote: otherwise a controller that read before another's provision
    committed could write last and leave that identity out until the next change."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": BROKER_FILES_LOCK})


def _reload(pid_file: Path | None, nats_only: bool) -> str:
    if pid_file is None and nats_only:
        return ("reload nats-server to apply it (set FLEET_BROKER_PID_FILE, run it under deploy/reload-on-change.sh, "
                "or nats-server --signal reload)")
    if pid_file is None:
        return ("the embedded broker reads them as they change (Mosquitto or nats-server: set FLEET_BROKER_PID_FILE, "
                "or run it under deploy/reload-on-change.sh)")
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
    existing.password_hash, existing.created_at, existing.revoked_at = hash_for_brokers(secret), utcnow(), None
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
