"""REST API tokens: `flt_<id>_<secret>`. Only the secret's sha256 is stored (the secret is 32
random bytes, so a plain hash is enough); scopes are ordered read < operate < admin."""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from controller.models import ApiToken
from controller.services.errors import ConflictError, NotFoundError
from controller.services.upsert import insert_ignore
from schemas.common import utcnow
from schemas.errors import FleetError

log = logging.getLogger(__name__)

PREFIX = "flt"
SCOPES = ("read", "operate", "admin")
BOOTSTRAP_ID = "admin0"  # the token from FLEET_ADMIN_TOKEN
LAST_USED_PRECISION = timedelta(minutes=1)  # how stale `last_used_at` may be before it is written again


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def allows(granted: str, needed: str) -> bool:
    return SCOPES.index(granted) >= SCOPES.index(needed)


class TokenRefused(FleetError):
    """Why a presented token does not admit its bearer (a one-line, secret-free reason)."""


def create_token(
    session: Session, name: str, scope: str, expires_at: datetime | None = None
) -> tuple[ApiToken, str]:
    """A new token and its full secret text (shown once, never stored); it stops working at
    `expires_at` when one is given."""
    token_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
    token = ApiToken(id=token_id, name=name, scope=scope, secret_sha256=_hash(secret), created_at=utcnow(),
                     expires_at=expires_at)
    session.add(token)
    session.commit()
    log.info("API token %s (%s, scope %s) created", token_id, name, scope)
    return token, f"{PREFIX}_{token_id}_{secret}"


def ensure_bootstrap(session: Session, secret: str) -> None:
    """Accept FLEET_ADMIN_TOKEN as an admin token (any text of 24+ characters, used whole)."""
    # Controllers sharing a database may start at once: insert unless there, then update.
    insert_ignore(session, ApiToken, {"id": BOOTSTRAP_ID, "name": "FLEET_ADMIN_TOKEN", "scope": "admin",
                                      "secret_sha256": _hash(secret), "created_at": utcnow()})
    token = session.get(ApiToken, BOOTSTRAP_ID, with_for_update=True, populate_existing=True)
    assert token is not None
    token.secret_sha256, token.revoked_at, token.scope = _hash(secret), None, "admin"
    session.commit()


def verify(session: Session, presented: str) -> ApiToken:
    """The live token `presented` stands for, read only; raises `TokenRefused` saying why not."""
    if presented.startswith(f"{PREFIX}_") and presented.count("_") >= 2:
        _prefix, token_id, secret = presented.split("_", 2)
    else:
        token_id, secret = BOOTSTRAP_ID, presented
    token = session.get(ApiToken, token_id)
    if token is None or token.revoked_at is not None or not hmac.compare_digest(token.secret_sha256, _hash(secret)):
        raise TokenRefused("the API token is unknown or revoked; create a new one with `fleet token create`")
    if token.expires_at is not None and token.expires_at <= utcnow():
        raise TokenRefused(f"the API token {token.id!r} expired at {token.expires_at.isoformat()}; "
                           "create a new one with `fleet token create`")
    return token


def use_is_stale(token: ApiToken) -> bool:
    """Whether `last_used_at` is old enough to be written again (at most once a minute, so
    reads seldom write)."""
    return token.last_used_at is None or utcnow() - token.last_used_at >= LAST_USED_PRECISION


def record_use(session: Session, token_id: str) -> None:
    """Write a token's `last_used_at` (one UPDATE, committed)."""
    session.execute(update(ApiToken).where(ApiToken.id == token_id).values(last_used_at=utcnow()))
    session.commit()


def authenticate(session: Session, presented: str) -> ApiToken:
    """`verify`, then `record_use` in the same (write) session when `last_used_at` is stale."""
    token = verify(session, presented)
    if use_is_stale(token):
        token.last_used_at = utcnow()
        session.commit()
    return token


def list_tokens(session: Session) -> list[ApiToken]:
    return list(session.scalars(select(ApiToken).order_by(ApiToken.created_at)))


def revoke_token(session: Session, token_id: str) -> ApiToken:
    token = session.get(ApiToken, token_id)
    if token is None:
        raise NotFoundError(f"token {token_id!r} does not exist; list tokens with GET /api/v1/tokens")
    if token.id == BOOTSTRAP_ID:
        raise ConflictError("this token comes from FLEET_ADMIN_TOKEN; change or unset that setting to retire it")
    if token.revoked_at is None:
        token.revoked_at = utcnow()
        session.commit()
        log.info("API token %s (%s) revoked", token.id, token.name)
    return token
