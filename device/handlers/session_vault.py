"""The task types `session_backup` and `session_restore`: an account's browser session (the
Playwright storage state of its profile: cookies and localStorage) sealed with the operator's
vault key and kept by the controller, so the login survives the loss of the PC
(docs/architecture.md#the-session-vault).

`session_backup` reads the profile's storage state, encrypts it (device/vault.py) and PUTs the
blob to the controller's signed backup link. `session_restore` downloads a blob through a signed
file link, decrypts it, replaces the profile's cookies with the blob's, writes its localStorage
(without touching the site: each origin is answered locally while its items are written), then
checks the login with the platform adapter. Neither posts anything, so both are safe to retry.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from device.handlers.base import BrowserEnvironment, TaskContext, TaskFailure, TaskHandler
from device.handlers.browser import preflight, run_in_browser
from schemas.errors import WireErrorCode
from schemas.vault import SessionBackupParams, SessionRestoreParams

if TYPE_CHECKING:
    from device.platforms.base import PlatformAdapter

BLANK_PAGE = "<!doctype html><title>fleet session restore</title>"
SET_ITEMS = "items => { for (const item of items) localStorage.setItem(item.name, item.value); }"


def vault_key(env: BrowserEnvironment) -> bytes:
    from device.vault import VaultError, load_key

    try:
        return load_key(env.vault_key_file)
    except VaultError as exc:
        raise TaskFailure(WireErrorCode.VAULT_KEY_MISSING, str(exc)) from None


class SessionBackupHandler(TaskHandler[SessionBackupParams]):
    """`session_backup`: seal the account's session with the vault key and send it to the controller."""

    type = "session_backup"
    params_model = SessionBackupParams
    safe_to_retry = True

    async def run(self, ctx: TaskContext, params: SessionBackupParams) -> dict[str, Any]:
        from device.vault import encrypt
        from schemas.vault import fingerprint

        env, _adapter = preflight(ctx, params.platform)
        key = vault_key(env)
        problem = env.media_policy.backup_link_problem(str(params.upload_url))
        if problem is not None:
            raise TaskFailure(WireErrorCode.URL_NOT_ALLOWED, problem)
        assert ctx.account is not None

        async def read_state(_adapter: PlatformAdapter, page: Any) -> dict[str, Any]:
            state: dict[str, Any] = await page.context.storage_state()
            return state

        state = await run_in_browser(ctx, params.platform, read_state)
        blob = encrypt(key, json.dumps(state).encode(), platform=params.platform, account=ctx.account)
        await ctx.progress(50, "session sealed with the vault key; sending it to the controller")
        await upload_blob(env, str(params.upload_url), blob)
        return {"size": len(blob), "key_fingerprint": fingerprint(key),
                "cookies": len(state.get("cookies", [])), "origins": len(state.get("origins", []))}


async def upload_blob(env: BrowserEnvironment, url: str, blob: bytes) -> None:
    """PUT the blob to the signed link; `backup_upload_failed` naming the link without its signature."""
    import httpx

    from config.tls import CaFileError, client_verify

    shown = url.split("?")[0]
    try:
        verify = client_verify(env.media_policy.ca_file)
        async with httpx.AsyncClient(timeout=httpx.Timeout(30), verify=verify, follow_redirects=False) as client:
            response = await client.put(url, content=blob, headers={"content-type": "application/octet-stream"})
    except CaFileError as exc:
        raise TaskFailure(WireErrorCode.BACKUP_UPLOAD_FAILED, str(exc)) from None
    except httpx.HTTPError as exc:
        raise TaskFailure(WireErrorCode.BACKUP_UPLOAD_FAILED, f"sending the backup to {shown} failed "
                          f"({type(exc).__name__})") from None
    if response.status_code not in (200, 201):
        try:
            detail = str(response.json().get("detail", ""))[:300]
        except ValueError:
            detail = ""
        raise TaskFailure(WireErrorCode.BACKUP_UPLOAD_FAILED,
                          f"the controller refused the backup (HTTP {response.status_code}): {detail}")


class SessionRestoreHandler(TaskHandler[SessionRestoreParams]):
    """`session_restore`: put a backed-up session into the account's profile, then check the login."""

    type = "session_restore"
    params_model = SessionRestoreParams
    safe_to_retry = True

    async def run(self, ctx: TaskContext, params: SessionRestoreParams) -> dict[str, Any]:
        from schemas.vault import fingerprint

        env, _adapter = preflight(ctx, params.platform)
        key = vault_key(env)
        mine = fingerprint(key)
        if params.key_fingerprint is not None and params.key_fingerprint != mine:
            raise TaskFailure(WireErrorCode.VAULT_KEY_MISMATCH, f"the backup was encrypted with vault key "
                              f"{params.key_fingerprint}; this device has vault key {mine}: give this device the key "
                              "file the backup was made with")
        state = await self._open(ctx, env, params, key)
        cookies, origins = state["cookies"], state["origins"]

        async def restore(adapter: PlatformAdapter, page: Any) -> dict[str, Any]:
            await page.context.clear_cookies()
            if cookies:
                await page.context.add_cookies(cookies)
            for origin in origins:
                await write_local_storage(page, origin)
            await ctx.progress(70, "session restored; checking the login")
            logged_in = await adapter.check_login(page, ctx)
            return {"logged_in": logged_in, "method": "session_restore", "cookies": len(cookies),
                    "origins": len(origins), "key_fingerprint": mine}

        return await run_in_browser(ctx, params.platform, restore)

    async def _open(self, ctx: TaskContext, env: BrowserEnvironment, params: SessionRestoreParams,
                    key: bytes) -> dict[str, Any]:
        """The backup's storage state: downloaded (signed link), decrypted, checked for shape."""
        from device.transfer import fetch
        from device.vault import VaultError, VaultKeyMismatch, decrypt

        assert ctx.account is not None
        path = await fetch(str(params.blob_url), ctx.data_dir / "cache", size=params.size, sha256=params.sha256,
                           progress=_quiet, policy=env.media_policy)
        try:
            blob = path.read_bytes()
        finally:
            path.unlink(missing_ok=True)
        try:
            state = json.loads(decrypt(key, blob, platform=params.platform, account=ctx.account))
        except VaultKeyMismatch as exc:
            raise TaskFailure(WireErrorCode.VAULT_KEY_MISMATCH, str(exc)) from None
        except VaultError as exc:
            raise TaskFailure(WireErrorCode.VAULT_BLOB_INVALID, str(exc)) from None
        except ValueError:
            raise TaskFailure(WireErrorCode.VAULT_BLOB_INVALID, "the backup decrypted, but is not a session") from None
        if not (isinstance(state, dict) and isinstance(state.get("cookies"), list)
                and isinstance(state.get("origins", []), list)):
            raise TaskFailure(WireErrorCode.VAULT_BLOB_INVALID, "the backup decrypted, but is not a browser session")
        state.setdefault("origins", [])
        await ctx.progress(40, "backup downloaded and decrypted")
        return state


async def write_local_storage(page: Any, origin: dict[str, Any]) -> None:
    """Write one origin's localStorage items; the origin's pages are answered with a blank page
    meanwhile, so the site sees no request."""
    items = origin.get("localStorage") or []
    url = str(origin.get("origin") or "").rstrip("/")
    if not items or not url:
        return
    pattern = url + "/**"

    async def blank(route: Any) -> None:
        await route.fulfill(status=200, content_type="text/html", body=BLANK_PAGE)

    await page.route(pattern, blank)
    try:
        await page.goto(url + "/", wait_until="domcontentloaded")
        await page.evaluate(SET_ITEMS, items)
    finally:
        await page.unroute(pattern, blank)


async def _quiet(_done: int, _total: int | None) -> None:
    return None
