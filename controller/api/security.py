"""Who may call the REST API: a bearer token with enough scope (read < operate < admin).

A missing or unknown token gets 401 (with `WWW-Authenticate: Bearer`), too small a scope 403;
both bodies say what to do. The token itself never appears in logs or answers.

A token is looked up once per request (`admit`, in a read session, so a check never waits for
the database's write lock); the request guard and every scope dependency of the route share
that answer through the request's state. Its `last_used_at` is written at most once a minute,
in a short write transaction of its own.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from controller.models import ApiToken
from controller.services import tokens

bearer = HTTPBearer(auto_error=False, description="an API token: `fleet token create`, or FLEET_ADMIN_TOKEN")
_ADMITTED = "fleet_api_token"  # request state key: (presented secret, its ApiToken)


def admitted(scope: MutableMapping[str, Any], presented: str) -> ApiToken | None:
    """The token this request already showed and had checked, if it is `presented`."""
    cached = scope.get("state", {}).get(_ADMITTED)
    return cached[1] if cached is not None and cached[0] == presented else None


def admit(scope: MutableMapping[str, Any], app_state: Any, presented: str) -> ApiToken:
    """Check `presented` (blocking: call it in a worker thread) and remember the answer for the
    rest of the request; raises `tokens.TokenRefused`."""
    token = admitted(scope, presented)
    if token is not None:
        return token
    with app_state.read_sessions() as session:
        token = tokens.verify(session, presented)
    if tokens.use_is_stale(token):
        with app_state.sessions() as session:
            tokens.record_use(session, token.id)
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
        token = admitted(request.scope, presented)
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
