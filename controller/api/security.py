"""Who may call the REST API: a bearer token with enough scope (read < operate < admin).

A missing or unknown token gets 401 (with `WWW-Authenticate: Bearer`), too small a scope 403;
both bodies say what to do. The token itself never appears in logs or answers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from controller.models import ApiToken
from controller.services import tokens

bearer = HTTPBearer(auto_error=False, description="an API token: `fleet token create`, or FLEET_ADMIN_TOKEN")


def require(scope: str) -> Callable[..., ApiToken]:
    """A dependency that admits tokens with at least `scope`."""

    def check(request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> ApiToken:
        if credentials is None or not credentials.credentials:
            raise HTTPException(
                401, "this endpoint needs an API token: send 'Authorization: Bearer <token>' "
                "(create one with `fleet token create`)", headers={"WWW-Authenticate": "Bearer"},
            )
        with request.app.state.sessions() as session:
            try:
                token = tokens.authenticate(session, credentials.credentials)
            except tokens.TokenRefused as exc:
                raise HTTPException(401, str(exc), headers={"WWW-Authenticate": "Bearer"}) from None
        if not tokens.allows(token.scope, scope):
            raise HTTPException(403, f"token {token.id!r} has scope {token.scope!r}; this needs {scope!r} or more")
        return token

    return check


Read = Depends(require("read"))
Operate = Depends(require("operate"))
Admin = Depends(require("admin"))
