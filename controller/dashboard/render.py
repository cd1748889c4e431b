"""Rendering dashboard pages: one Jinja2 environment per language (gettext installed with
`jinja2.ext.i18n`), and `render`, which gives every template what the layout needs.

Every template gets: `request`, `lang`, `languages`, `_`/`gettext`/`ngettext` (in `lang`),
`token` (the signed-in ApiToken or None), `can_operate` (show forms and buttons that change
something only when True), `csrf_token` (put it in every POST form as `csrf_token`; htmx sends
it as the `X-CSRF-Token` header from the <body>'s hx-headers) and `nav` (the nav links).
"""

from __future__ import annotations

import functools
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse

from controller.dashboard.i18n import LANGUAGE_NAMES, LANGUAGES, N_, html_lang, language_of, translations
from controller.dashboard.session import CSRF_FIELD, csrf_value
from controller.services import tokens

TEMPLATES_DIR = Path(__file__).parent / "templates"

# (path, label): the nav bar; pages of other modules are listed here too.
NAV: list[tuple[str, str]] = [
    ("/", N_("Overview")),
    ("/devices", N_("Devices")),
    ("/tasks", N_("Tasks")),
    ("/jobs", N_("Jobs")),
    ("/accounts", N_("Accounts")),
    ("/send", N_("Send")),
]


def _when(value: datetime | None, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    """A UTC timestamp as text ('' for None); naive datetimes are taken as UTC."""
    if value is None:
        return ""
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).strftime(fmt) + " UTC"


def _iso(value: datetime | None) -> str:
    if value is None:
        return ""
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.isoformat()


def _bytes(value: int | None) -> str:
    if value is None:
        return ""
    size = float(value)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(value)


def _brief(details: dict[str, Any], longest: int = 120) -> str:
    """A task event's details as JSON for the timeline, each long value (a QR code's base64
    PNG runs to kilobytes) cut to its first characters."""
    return json.dumps({key: value if not isinstance(value, str) or len(value) <= longest
                       else f"{value[:24]}… ({len(value)} chars)" for key, value in details.items()},
                      ensure_ascii=False)


@functools.cache
def environment(lang: str) -> Environment:
    """The template environment of `lang` (one per language, built once)."""
    env = Environment(
        loader=FileSystemLoader(TEMPLATES_DIR),
        autoescape=select_autoescape(["html"]),
        extensions=["jinja2.ext.i18n"],
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.install_gettext_translations(translations(lang), newstyle=True)  # type: ignore[attr-defined]
    env.filters["when"] = _when
    env.filters["iso"] = _iso
    env.filters["bytes"] = _bytes
    env.filters["brief"] = _brief
    return env


def extra_templates(prefix: str) -> list[str]:
    """Templates named `<prefix>*.html`, in name order: panels other modules add to a page
    (`overview_extra_*.html` on the overview, `task_extra_*.html` on a task page)."""
    return sorted(path.name for path in TEMPLATES_DIR.glob(f"{prefix}*.html"))


def context_for(request: Request, context: dict[str, Any] | None = None) -> dict[str, Any]:
    """What every template gets (see the module docstring), plus `context`."""
    lang = language_of(request)
    token = getattr(request.state, "dashboard_token", None)
    values: dict[str, Any] = {
        "request": request,
        "lang": lang,
        "html_lang": html_lang(lang),
        "languages": [(code, LANGUAGE_NAMES[code]) for code in LANGUAGES],
        "token": token,
        "can_operate": token is not None and tokens.allows(token.scope, "operate"),
        "csrf_token": csrf_value(request),
        "csrf_field": CSRF_FIELD,
        "nav": NAV,
        "path": request.url.path,
    }
    values.update(context or {})
    return values


def render_text(request: Request, template_name: str, context: dict[str, Any] | None = None) -> str:
    """A template rendered to text in the request's language (for partials sent over SSE too)."""
    values = context_for(request, context)
    return environment(values["lang"]).get_template(template_name).render(values)


def render(
    request: Request, template_name: str, context: dict[str, Any] | None = None, status_code: int = 200
) -> HTMLResponse:
    """A page or partial in the request's language, with the layout's values."""
    response = HTMLResponse(render_text(request, template_name, context), status_code=status_code)
    response.headers["Vary"] = "Cookie, Accept-Language"
    response.headers["Cache-Control"] = "no-store"
    return response
