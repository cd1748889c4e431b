"""Who may call the REST API: a bearer token with enough scope (read < operate < admin).

A missing or unknown token gets 401 (with `WWW-Authenticate: Bearer`), too small a scope 403;
both bodies say what to do. The token itself never appears in logs or answers.

A token is looked up once per request (`admit`, in a read session, so a check never waits for
the database's write lock); the request guard and every scope dependency of the route share
that answer through the request's state. A token verified in the last `VERIFIED_FOR` seconds
is admitted from memory (`VerifiedTokens`), in the event loop, without a database read or a
worker thread. Its `last_used_at` is written at most once a minute, in a short write
transaction of its own.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from controller.models import ApiToken
from controller.services import tokens
from schemas.common import utcnow

VERIFIED_FOR = 5.0  # seconds a verified token is admitted without reading it again
_VERIFIED_MAX = 1_000  # entries kept at most; only verified tokens ever get in

bearer = HTTPBearer(auto_error=False, description="an API token: `fleet token create`, or FLEET_ADMIN_TOKEN")
_ADMITTED = "fleet_api_token"  # request state key: (presented secret, its ApiToken)


class VerifiedTokens:
    """API tokens verified in the last `ttl` seconds, keyed by the sha256 of the presented text
    (the secret itself is not kept). A hit costs a hash and a dict look-up instead of a read
    transaction in a worker thread, the largest part of a POST's time once its own SQL was
    short. A token revoked through this controller's API is forgotten at once (`forget`); one
    revoked by another controller sharing the database stops working within `ttl` seconds; an
    expiry is checked on every use."""

    def __init__(self, ttl: float = VERIFIED_FOR) -> None:
        self._ttl = ttl
        self._lock = threading.Lock()
        self._tokens: dict[str, tuple[float, ApiToken]] = {}

    @staticmethod
    def _key(presented: str) -> str:
        return hashlib.sha256(presented.encode()).hexdigest()

    def get(self, presented: str) -> ApiToken | None:
        """The token `presented` stands for, if verified less than `ttl` seconds ago and not expired."""
        key = self._key(presented)
        with self._lock:
            entry = self._tokens.get(key)
            if entry is None:
                return None
            verified_at, token = entry
            if time.monotonic() - verified_at < self._ttl and (token.expires_at is None or token.expires_at > utcnow()):
                return token
            del self._tokens[key]
            return None

    def put(self, presented: str, token: ApiToken) -> None:
        now = time.monotonic()
        with self._lock:
            if len(self._tokens) >= _VERIFIED_MAX:
                self._tokens = {k: v for k, v in self._tokens.items() if now - v[0] < self._ttl}
            self._tokens[self._key(presented)] = (now, token)

    def forget(self, token_id: str) -> None:
        """Drop a token (it was just revoked): its next use is verified against the database."""
        with self._lock:
            self._tokens = {k: v for k, v in self._tokens.items() if v[1].id != token_id}


def admitted(scope: MutableMapping[str, Any], presented: str, app_state: Any = None) -> ApiToken | None:
    """The token this request already showed and had checked, if it is `presented`; with
    `app_state`, also one verified moments ago whose `last_used_at` needs no write (no I/O:
    safe in the event loop)."""
    cached = scope.get("state", {}).get(_ADMITTED)
    if cached is not None and cached[0] == presented:
        return cached[1]
    token = None if app_state is None else app_state.verified_tokens.get(presented)
    if token is None or tokens.use_is_stale(token):
        return None
    scope.setdefault("state", {})[_ADMITTED] = (presented, token)
    return token


def admit(scope: MutableMapping[str, Any], app_state: Any, presented: str) -> ApiToken:
    """Check `presented` (blocking: call it in a worker thread) and remember the answer for the
    rest of the request and the next `VERIFIED_FOR` seconds; raises `tokens.TokenRefused`."""
    token = admitted(scope, presented)
    if token is not None:
        return token
    verified: VerifiedTokens = app_state.verified_tokens
    token = verified.get(presented)
    if token is None:
        with app_state.read_sessions() as session:
            token = tokens.verify(session, presented)
        verified.put(presented, token)
    if tokens.use_is_stale(token):
        with app_state.sessions() as session:
            tokens.record_use(session, token.id)
        token.last_used_at = utcnow()  # the remembered copy: written again a minute from now
    scope.setdefault("state", {})[_ADMITTED] = (presented, token)
    return token


def require(scope: str) -> Callable[..., Awaitable[ApiToken]]:
    """A dependency that admits tokens with at least `scope`."""

    async def check(
        request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
    ) -> ApiToken:
        if credentials is None or not credentials.credentials:
            raise HTTPException(
                401, "this endpoint needs an API token: send 'Authorization: Bearer <token>' "
                "(create one with `fleet token create`)", headers={"WWW-Authenticate": "Bearer"},
            )
        presented = credentials.credentials
        token = admitted(request.scope, presented, request.app.state)
        if token is None:
            try:
                token = await run_in_threadpool(admit, request.scope, request.app.state, presented)
            except tokens.TokenRefused as exc:
                raise HTTPException(401, str(exc), headers={"WWW-Authenticate": "Bearer"}) from None
        if not tokens.allows(token.scope, scope):
            raise HTTPException(403, f"token {token.id!r} has scope {token.scope!r}; this needs {scope!r} or more")
        return token

    return check


Read = Depends(require("read"))
Operate = Depends(require("operate"))
Admin = Depends(require("admin"))
