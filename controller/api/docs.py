"""The API's documentation pages, Swagger UI at /docs and ReDoc at /redoc, served with their
JavaScript and CSS from installed packages instead of a CDN, so they work on a machine without
internet (FastAPI's "self-hosting JavaScript and CSS for docs" recipe).

Swagger UI comes from `swagger-ui-bundle-v2` (Swagger UI's dist files with its Apache-2.0
licence); ReDoc's standalone bundle from `fastapi-offline`, the maintained package that ships
it. Like the OpenAPI document, these pages need no API token: they only show the schema, and
every call made from them still needs one ("Authorize" in Swagger UI).
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

DOCS_URL = "/docs"
REDOC_URL = "/redoc"
ASSETS_URL = "/docs-assets"
SWAGGER_ASSETS = f"{ASSETS_URL}/swagger-ui"
REDOC_ASSETS = f"{ASSETS_URL}/redoc"
# The pages may load nothing from elsewhere. ReDoc's sidebar hard-codes its maker's logo from
# cdn.redoc.ly (no option turns it off): this policy refuses it before any request is made.
# Swagger UI's page starts with an inline script; ReDoc's search runs in a blob: worker.
POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; worker-src 'self' blob:; connect-src 'self'"
)


def _local_only(page: HTMLResponse) -> HTMLResponse:
    page.headers["Content-Security-Policy"] = POLICY
    return page


def add_docs(app: FastAPI) -> None:
    """Serve /docs and /redoc on `app` from local assets. The app must be created with
    `docs_url=None, redoc_url=None` so FastAPI's CDN-backed pages are not registered too."""
    assert app.docs_url is None and app.redoc_url is None, "create the app with docs_url=None, redoc_url=None"
    openapi_url = app.openapi_url or "/openapi.json"
    oauth2_redirect_url = app.swagger_ui_oauth2_redirect_url or "/docs/oauth2-redirect"
    app.mount(SWAGGER_ASSETS, StaticFiles(directory=str(swagger_ui_path)), name="swagger-ui-assets")
    app.mount(REDOC_ASSETS, StaticFiles(packages=[("fastapi_offline", "static")]), name="redoc-assets")

    @app.get(DOCS_URL, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return _local_only(get_swagger_ui_html(
            openapi_url=f"{root}{openapi_url}",
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}{SWAGGER_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{SWAGGER_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{root}{SWAGGER_ASSETS}/favicon-32x32.png",
            oauth2_redirect_url=f"{root}{oauth2_redirect_url}",
            # Swagger UI's default validator badge is fetched from validator.swagger.io: off.
            swagger_ui_parameters={"validatorUrl": None, **(app.swagger_ui_parameters or {})},
        ))

    @app.get(oauth2_redirect_url, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get(REDOC_URL, include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return _local_only(get_redoc_html(
            openapi_url=f"{root}{openapi_url}",
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{REDOC_ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{SWAGGER_ASSETS}/favicon-32x32.png",
            with_google_fonts=False,
        ))
