"""The REST front door, before any route reads a body: a request that can carry one (POST, PUT,
PATCH, DELETE) must show a live API token first (401), and its body is counted as it arrives,
chunked or not, so that one past FLEET_MAX_REQUEST_BYTES gets a 413 without ever being held in
memory. File uploads (`/api/v1/files`, the dashboard's `/send/upload`) are streamed to disk and
bounded by FLEET_MAX_UPLOAD_BYTES in the files service instead; so are the session backups
devices PUT to `/api/v1/backups/<task>`, authorised by the link's signature, not a token. The dashboard's other forms
(cookie sign-in, checked by their routes) have their bodies counted the same way."""

from __future__ import annotations

from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from controller.api.security import admit, admitted
from controller.services import tokens
from schemas.errors import FleetError

API_PREFIX = "/api/v1"
BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Dashboard pages whose bodies are streamed to the file store, bounded by FLEET_MAX_UPLOAD_BYTES.
STREAMED_PAGES = frozenset({"/send/upload"})
NO_TOKEN = "this endpoint needs an API token: send 'Authorization: Bearer <token>' (create one with `fleet token create`)"


class BodyTooLarge(FleetError):
    """Raised from `receive` once a body has grown past the limit."""


def bearer_token(scope: Scope) -> str | None:
    """The token of an `Authorization: Bearer …` header, or None."""
    value = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
    kind, _, token = value.partition(" ")
    return (token.strip() or None) if kind.lower() == "bearer" else None


def _unauthorized(detail: str) -> JSONResponse:
    return JSONResponse(status_code=401, content={"detail": detail}, headers={"WWW-Authenticate": "Bearer"})


def _too_large(limit: int, size: int | None = None) -> JSONResponse:
    said = f"{size} bytes" if size is not None else f"more than {limit} bytes"
    detail = f"the request body is {said}; this API accepts at most {limit} (FLEET_MAX_REQUEST_BYTES)"
    return JSONResponse(status_code=413, content={"detail": detail})


class RequestGuard:
    """ASGI middleware: token first, then a counted body (see the module docstring)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if not path.startswith(API_PREFIX):
            # Dashboard forms sign in by cookie (checked by their routes) but are bounded alike.
            if scope["method"] in BODY_METHODS and path not in STREAMED_PAGES:
                await self._bounded(scope, receive, send)
            else:
                await self.app(scope, receive, send)
            return
        signed_upload = scope["method"] == "PUT" and path.startswith(f"{API_PREFIX}/backups/")
        if scope["method"] in BODY_METHODS and not signed_upload:  # a backup PUT shows a signed link instead
            refusal = await self._refusal(scope)
            if refusal is not None:
                await refusal(scope, receive, send)
                return
        if path.startswith(f"{API_PREFIX}/files") or signed_upload:
            await self.app(scope, receive, send)  # streamed to disk, bounded by FLEET_MAX_UPLOAD_BYTES
            return
        await self._bounded(scope, receive, send)

    async def _bounded(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the app unless the declared length is past the limit; count what arrives."""
        length = dict(scope["headers"]).get(b"content-length", b"0")
        if length.isdigit() and int(length) > self.limit:
            await _too_large(self.limit, int(length))(scope, receive, send)
            return
        await self._counted(scope, receive, send)

    async def _refusal(self, scope: Scope) -> JSONResponse | None:
        """A 401 answer when the request has no live token, else None (scopes are checked by the routes)."""
        presented = bearer_token(scope)
        if presented is None:
            return _unauthorized(NO_TOKEN)
        app_state = scope["app"].state
        if admitted(scope, presented, app_state) is not None:
            return None  # verified moments ago: no worker thread needed

        def check() -> str | None:
            try:
                admit(scope, app_state, presented)
            except tokens.TokenRefused as exc:
                return str(exc)
            return None

        reason = await run_in_threadpool(check)
        return None if reason is None else _unauthorized(reason)

    async def _counted(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the app with a `receive` that answers 413 itself once the body passes the limit
        (FastAPI turns any error while reading a body into a 400, so raising alone is not enough)
        and a `send` that drops whatever the app answers after that."""
        received, started, answered = 0, False, False

        async def counting_receive() -> Message:
            nonlocal received, answered
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    if not started and not answered:
                        answered = True
                        await _too_large(self.limit)(scope, receive, send)
                    raise BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if answered:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if not answered:
                raise
