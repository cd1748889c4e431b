"""Signing in and out of the dashboard, and the language switch."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from controller.dashboard.i18n import LANG_COOKIE, LANGUAGES, N_, language_of, translate
from controller.dashboard.render import render
from controller.dashboard.session import (
    CSRF_COOKIE,
    SESSION_COOKIE,
    check_token,
    csrf_value,
    new_csrf,
    set_cookie,
)
from controller.services import tokens

router = APIRouter(include_in_schema=False)

LANG_MAX_AGE = 365 * 24 * 3600


def safe_next(value: str | None) -> str:
    """A local path to go to after signing in (never another site)."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value


def _login_page(request: Request, next_path: str, error: str | None = None, status_code: int = 200) -> Response:
    csrf = csrf_value(request) or new_csrf()
    request.cookies[CSRF_COOKIE] = csrf  # so the form carries the value the cookie will hold
    response = render(request, "login.html", {"next_path": safe_next(next_path), "error": error}, status_code)
    set_cookie(request, response, CSRF_COOKIE, csrf)
    return response


@router.get("/login")
async def login_form(request: Request, next: str = "/") -> Response:
    return _login_page(request, next)


@router.post("/login")
async def login(
    request: Request,
    token: Annotated[str, Form(max_length=400)] = "",
    next: Annotated[str, Form(max_length=2000)] = "/",
    csrf_token: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    lang = language_of(request)
    expected = csrf_value(request)
    if not expected or not hmac.compare_digest(expected, csrf_token):
        message = translate(lang, N_("The sign-in form was stale; please try again."))
        return _login_page(request, next, message, 403)
    if not token.strip():
        return _login_page(request, next, translate(lang, N_("Enter an API token.")), 400)
    try:
        await check_token(request, token.strip())
    except tokens.TokenRefused:
        message = translate(lang, N_("This API token is unknown, revoked or expired. Create one with `fleet token create`."))
        return _login_page(request, next, message, 401)
    response = RedirectResponse(safe_next(next), status_code=303)
    set_cookie(request, response, SESSION_COOKIE, token.strip())
    set_cookie(request, response, CSRF_COOKIE, new_csrf())  # a fresh value per session
    return response


@router.post("/logout")
async def logout(request: Request, csrf_token: Annotated[str, Form(max_length=200)] = "") -> Response:
    """Sign out (needs the session's CSRF value, so another site cannot sign a user out)."""
    expected = csrf_value(request)
    response = RedirectResponse("/login", status_code=303)
    if expected and hmac.compare_digest(expected, csrf_token):
        response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("/lang/{code}")
async def switch_language(request: Request, code: str, next: str = "/") -> Response:
    """Remember the chosen language in a cookie and go back to the page."""
    response = RedirectResponse(safe_next(next), status_code=303)
    if code in LANGUAGES:
        set_cookie(request, response, LANG_COOKIE, code, LANG_MAX_AGE)
    return response
