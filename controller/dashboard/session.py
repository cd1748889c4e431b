"""Who is signed in to the dashboard: an API token kept in an HttpOnly, SameSite=Strict cookie.

The token is checked exactly as the REST API checks a bearer token (`controller.api.security.admit`:
read < operate < admin, revocation and expiry included). A page needs a read-scope token; a form
POST needs operate (`Operator`) and a matching CSRF value: the `fleet_csrf` cookie (random, set at
sign-in, SameSite=Strict as well) must equal the form's `csrf_token` field or the `X-CSRF-Token`
header htmx sends. A read-scope token gets 403 from every POST, whatever the page showed it.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Annotated
from urllib.parse import quote

from fastapi import Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from starlette.responses import Response

from controller.api.security import admit, admitted
from controller.models import ApiToken
from controller.services import tokens
from schemas.errors import ControllerError

SESSION_COOKIE = "fleet_session"
CSRF_COOKIE = "fleet_csrf"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
SESSION_MAX_AGE = 12 * 3600  # seconds; the token's own expiry still applies


class NeedLogin(ControllerError):
    """The request has no live dashboard session: send the browser to /login."""

    def __init__(self, next_path: str, reason: str | None = None) -> None:
        super().__init__(reason or "sign in")
        self.next_path, self.reason = next_path, reason


def login_url(next_path: str) -> str:
    return f"/login?next={quote(next_path, safe='/')}"


def set_cookie(request: Request, response: Response, name: str, value: str, max_age: int = SESSION_MAX_AGE) -> None:
    """An HttpOnly, SameSite=Strict cookie, Secure when the page came over https."""
    response.set_cookie(name, value, max_age=max_age, path="/", httponly=True, samesite="strict",
                        secure=request.url.scheme == "https")


def new_csrf() -> str:
    return secrets.token_urlsafe(24)


async def check_token(request: Request, presented: str) -> ApiToken:
    """The live token `presented` stands for; raises `tokens.TokenRefused` saying why not."""
    token = admitted(request.scope, presented, request.app.state)
    if token is None:
        token = await run_in_threadpool(admit, request.scope, request.app.state, presented)
    return token


async def viewer(request: Request) -> ApiToken:
    """The signed-in token (any scope), or NeedLogin."""
    next_path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    presented = request.cookies.get(SESSION_COOKIE)
    if not presented:
        raise NeedLogin(next_path)
    try:
        token = await check_token(request, presented)
    except tokens.TokenRefused as exc:
        raise NeedLogin(next_path, str(exc)) from None
    request.state.dashboard_token = token
    return token


def csrf_value(request: Request) -> str:
    return request.cookies.get(CSRF_COOKIE, "")


async def check_csrf(request: Request) -> None:
    """403 unless the form field or header carries the session's CSRF value."""
    expected = csrf_value(request)
    sent = request.headers.get(CSRF_HEADER)
    if sent is None and request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        form = await request.form()
        field = form.get(CSRF_FIELD)
        sent = field if isinstance(field, str) else None
    if not expected or not sent or not hmac.compare_digest(expected, sent):
        raise HTTPException(403, "the form's CSRF token is missing or stale: reload the page and try again")


async def operator(request: Request, token: Annotated[ApiToken, Depends(viewer)]) -> ApiToken:
    """A signed-in token with operate scope or more, on a request with the session's CSRF value."""
    if not tokens.allows(token.scope, "operate"):
        raise HTTPException(403, f"token {token.id!r} has scope {token.scope!r}; this needs 'operate' or more")
    await check_csrf(request)
    return token


Viewer = Annotated[ApiToken, Depends(viewer)]
Operator = Annotated[ApiToken, Depends(operator)]
