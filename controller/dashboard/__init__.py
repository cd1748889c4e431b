"""The web dashboard served by the controller at `/`: server-rendered Jinja2 pages made live with
htmx and its SSE extension (vendored under static/vendor, no build step), in English and
Simplified Chinese (gettext catalogs under locales/, read with Babel).

Each page group is a module `pages_<name>.py` with an APIRouter named `router`; `ROUTERS` lists
them all (every `pages_*` module of this package, in name order), so a new page group is a new
file and no edit here. `mount(app)` adds them, the static files and the error pages.
See docs/architecture.md#web-dashboard.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from controller.dashboard.i18n import N_, language_of, translate
from controller.dashboard.render import render
from controller.dashboard.session import NeedLogin, login_url
from controller.services.errors import ServiceError

STATIC_DIR = Path(__file__).parent / "static"
# Paths that are not dashboard pages: their errors stay JSON.
NOT_PAGES = ("/api/", "/healthz", "/docs", "/redoc", "/openapi.json", "/metrics", "/static/")


def _page_modules() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)]) if m.name.startswith("pages_"))


ROUTERS: list[APIRouter] = [importlib.import_module(f"{__name__}.{name}").router for name in _page_modules()]

ERROR_TITLES = {
    400: N_("Bad request"),
    401: N_("Sign in"),
    403: N_("Not allowed"),
    404: N_("Not found"),
    409: N_("Conflict"),
    413: N_("Too large"),
    422: N_("Invalid input"),
    503: N_("Unavailable"),
}


def is_page(request: Request) -> bool:
    return not request.url.path.startswith(NOT_PAGES)


def error_page(request: Request, status_code: int, detail: str) -> Response:
    title = translate(language_of(request), ERROR_TITLES.get(status_code, N_("Error")))
    return render(request, "error.html", {"title": title, "detail": detail}, status_code)


async def _need_login(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, NeedLogin)
    if request.headers.get("hx-request"):
        return Response(status_code=401, headers={"HX-Redirect": login_url(exc.next_path)})
    return RedirectResponse(login_url(exc.next_path), status_code=303)


def mount(app: FastAPI) -> None:
    """Serve the dashboard from `app`: its routers, /static, and HTML error pages for page paths
    (API paths keep their JSON errors)."""
    for router in ROUTERS:
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="dashboard-static")
    app.add_exception_handler(NeedLogin, _need_login)
    service_handler = app.exception_handlers.get(ServiceError)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if is_page(request):
            return error_page(request, exc.status_code, str(exc.detail))
        return await http_exception_handler(request, exc)

    async def service_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ServiceError)
        if is_page(request) or service_handler is None:
            return error_page(request, exc.status_code, exc.detail)
        answer = service_handler(request, exc)
        return answer if isinstance(answer, Response) else await answer

    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(ServiceError, service_error)
