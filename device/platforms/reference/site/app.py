"""The reference site's routes. Test hooks live under `/_phone` (what the user's phone does:
scan the QR code, receive the SMS) and `/_admin` (switch failures on, read the records)."""

from __future__ import annotations

import hashlib
import io
import secrets
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs

import segno
from fastapi import Cookie, FastAPI, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, Field, ValidationError

from device.platforms.reference.site import pages
from device.platforms.reference.site.store import SiteStore

SESSION = "session"
SessionCookie = Annotated[str | None, Cookie(alias=SESSION)]


class Scan(BaseModel):
    token: str
    account: str = Field(min_length=1, max_length=200)


class CodeEntry(BaseModel):
    token: str
    code: str = Field(max_length=32)


class Publish(BaseModel):
    upload_id: str
    cover_id: str | None = None
    title: str = Field(max_length=1000)
    tags: list[str] = Field(default_factory=list)
    publish_at: str | None = None


class Message(BaseModel):
    to: str = Field(min_length=1, max_length=200)
    message: str = Field(min_length=1, max_length=10_000)


class AdminConfig(BaseModel):
    sms_required: list[str] = Field(default_factory=list, description="accounts whose login asks for an SMS code")
    fail: dict[str, int] = Field(default_factory=dict, description='e.g. {"publish": 500, "send": 500}')


def create_app(state_dir: Path) -> FastAPI:
    store = SiteStore(state_dir)
    app = FastAPI(title="Reference platform", docs_url=None, redoc_url=None)

    def account_of(session: str | None) -> str | None:
        return store.sessions.get(session) if session else None

    def require(session: str | None) -> str:
        account = account_of(session)
        if account is None:
            raise HTTPException(401, "log in first")
        return account

    def fail_if_asked(endpoint: str) -> None:
        status = store.fail.get(endpoint)
        if status:
            raise HTTPException(status, f"the platform could not {endpoint} right now (error {status}); try again later")

    # ---- login --------------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    def root(session: SessionCookie = None) -> RedirectResponse:
        return RedirectResponse("/home" if account_of(session) else "/login", status_code=303)

    @app.get("/login", response_class=HTMLResponse)
    def login(session: SessionCookie = None) -> Response:
        if account_of(session):
            return RedirectResponse("/home", status_code=303)
        return HTMLResponse(pages.login_page(store.new_token()))

    @app.get("/login/qr.png")
    def qr(request: Request, token: str) -> Response:
        picture = io.BytesIO()
        segno.make(f"{request.base_url}_phone/scan?token={token}").save(picture, kind="png", scale=6, border=2)
        return Response(picture.getvalue(), media_type="image/png")

    @app.get("/login/state")
    def login_state(token: str) -> dict[str, Any]:
        entry = store.tokens.get(token)
        if entry is None:
            raise HTTPException(404, "unknown login token; reload the login page")
        return {"state": entry.state, "account": entry.account}

    @app.post("/login/code")
    def login_code(body: CodeEntry) -> dict[str, bool]:
        entry = store.tokens.get(body.token)
        if entry is None or entry.state != "needs_code":
            raise HTTPException(409, "no code is expected for this login")
        if not secrets.compare_digest(body.code.strip(), entry.code or ""):
            return {"ok": False}
        entry.state, entry.used_code = "done", True
        return {"ok": True}

    @app.get("/login/finish")
    def login_finish(token: str) -> RedirectResponse:
        entry = store.tokens.pop(token, None)
        if entry is None or entry.state != "done" or entry.account is None:
            return RedirectResponse("/login", status_code=303)
        store.record("logins", {"account": entry.account, "method": "qr+sms" if entry.used_code else "qr"})
        response = RedirectResponse("/home", status_code=303)
        # Persistent, like a real platform's login: it survives the browser being closed.
        response.set_cookie(SESSION, store.new_session(entry.account), max_age=30 * 86400, httponly=True, samesite="lax")
        return response

    @app.get("/logout")
    def logout(session: SessionCookie = None) -> RedirectResponse:
        if session:
            store.sessions.pop(session, None)
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION)
        return response

    # ---- pages that need a login --------------------------------------------------------
    @app.get("/home", response_class=HTMLResponse)
    def home(session: SessionCookie = None) -> Response:
        account = account_of(session)
        return HTMLResponse(pages.home_page(account)) if account else RedirectResponse("/login", status_code=303)

    @app.get("/upload", response_class=HTMLResponse)
    def upload(session: SessionCookie = None) -> Response:
        return HTMLResponse(pages.upload_page()) if account_of(session) else RedirectResponse("/login", status_code=303)

    @app.get("/messages", response_class=HTMLResponse)
    def messages(session: SessionCookie = None) -> Response:
        return HTMLResponse(pages.messages_page()) if account_of(session) else RedirectResponse("/login", status_code=303)

    # ---- the site's own API, used by its pages --------------------------------------------
    @app.post("/api/upload")
    async def api_upload(request: Request, name: str = "upload", session: SessionCookie = None) -> dict[str, str]:
        require(session)
        upload_id = secrets.token_hex(8)
        path = store.state_dir / "uploads" / upload_id
        path.parent.mkdir(parents=True, exist_ok=True)
        digest, size = hashlib.sha256(), 0
        with path.open("wb") as file:
            async for chunk in request.stream():
                digest.update(chunk)
                size += len(chunk)
                await run_in_threadpool(file.write, chunk)
        store.files[upload_id] = {"name": name, "sha256": digest.hexdigest(), "size": size}
        return {"upload_id": upload_id}

    @app.post("/api/publish")
    def api_publish(body: Publish, session: SessionCookie = None) -> dict[str, str]:
        account = require(session)
        fail_if_asked("publish")
        video = store.files.get(body.upload_id)
        if video is None:
            raise HTTPException(400, "the video was not uploaded")
        cover = store.files.get(body.cover_id) if body.cover_id else None
        publish_at = f"{body.publish_at}:00+00:00" if body.publish_at and len(body.publish_at) == 16 else body.publish_at
        video_id = secrets.token_hex(6)
        store.record("uploads", {
            "account": account, "video_id": video_id, "title": body.title, "tags": body.tags, "publish_at": publish_at,
            "video_sha256": video["sha256"], "video_size": video["size"], "cover_sha256": cover["sha256"] if cover else None,
        })
        return {"video_id": video_id}

    @app.post("/api/send")
    def api_send(body: Message, session: SessionCookie = None) -> dict[str, bool]:
        account = require(session)
        fail_if_asked("send")
        store.record("messages", {"account": account, "to": body.to, "message": body.message})
        return {"ok": True}

    # ---- the user's phone -----------------------------------------------------------------
    @app.post("/_phone/scan")
    def phone_scan(body: Scan) -> dict[str, str]:
        entry = store.tokens.get(body.token)
        if entry is None or entry.state != "waiting":
            raise HTTPException(404, "this QR code is unknown or already used; scan the one on the login page")
        entry.account = body.account
        if body.account in store.sms_required:
            entry.state, entry.code = "needs_code", f"{secrets.randbelow(10**6):06d}"
        else:
            entry.state = "done"
        return {"state": entry.state}

    @app.get("/_phone/scan", response_class=HTMLResponse)
    def phone_scan_page(token: str, account: str = "") -> HTMLResponse:
        """What a person sees who opens the QR code's link: approve as an account. A login
        task's link names its account (`&account=`), which the form then offers."""
        return HTMLResponse(pages.phone_page(token, account))

    @app.post("/_phone/approve", response_class=HTMLResponse)
    async def phone_approve(request: Request) -> HTMLResponse:
        form = parse_qs((await request.body()).decode())
        token, account = (form.get("token") or [""])[0], (form.get("account") or [""])[0].strip()
        if not account:
            raise HTTPException(400, "name the account to log in as (the scan link of a login task names it)")
        if form.get("sms"):
            store.sms_required.add(account)
        try:
            scan = Scan(token=token, account=account)
        except ValidationError:
            raise HTTPException(400, "the account name is too long (at most 200 characters)") from None
        state = phone_scan(scan)["state"]
        code = store.tokens[token].code if state == "needs_code" else None
        return HTMLResponse(pages.phone_done(state, code))

    @app.get("/_phone/sms")
    def phone_sms(account: Annotated[str, Query(min_length=1)]) -> dict[str, str]:
        for entry in store.tokens.values():
            if entry.account == account and entry.state == "needs_code" and entry.code:
                return {"code": entry.code}
        raise HTTPException(404, f"no code was sent to {account}'s phone")

    # ---- test switches and records ----------------------------------------------------------
    @app.post("/_admin/config")
    def admin_config(body: AdminConfig) -> dict[str, Any]:
        store.sms_required = set(body.sms_required)
        store.fail = dict(body.fail)
        return body.model_dump()

    @app.post("/_admin/reset")
    def admin_reset() -> dict[str, bool]:
        store.reset()
        return {"ok": True}

    @app.get("/_records")
    def records() -> JSONResponse:
        return JSONResponse(store.records)

    return app
