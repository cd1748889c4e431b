"""The browser task types `login`, `upload` and `chat`: each runs one platform adapter in a
browser on the task's account profile.

What every one of them guarantees: the task names an account (profiles are per account, and
the executor never runs two tasks of one account at once); the browser is closed however the
task ends; a failure carries a screenshot and the page URL in its result; a cancelled task
reports the same as a last progress event before it ends `canceled`. Upload and chat post
something, so they are not safe to retry; login only signs in, so it is.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from device.handlers.base import (
    BrowserEnvironment,
    TaskContext,
    TaskFailure,
    TaskHandler,
)
from schemas.errors import WireErrorCode
from schemas.tasks import ChatParams, LoginParams, UploadParams

# The browser stack (Playwright, the browser session, platform adapters, the media downloader)
# is imported when a browser task runs, so a daemon that never runs one does not carry it
# (docs/architecture.md#device-memory).
if TYPE_CHECKING:
    from device.platforms.base import PlatformAdapter

Action = Callable[["PlatformAdapter", Any], Awaitable[dict[str, Any]]]


def running_as_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def adapter_for(env: BrowserEnvironment, name: str) -> PlatformAdapter:
    cls = env.platforms.get(name)
    if cls is None:
        known = ", ".join(sorted(env.platforms)) or "none installed"
        raise TaskFailure(WireErrorCode.UNKNOWN_PLATFORM, f"this device has no adapter for platform {name!r}; it has: {known}")
    override = env.locator_dir / f"{name}.toml" if env.locator_dir else None
    try:
        return cls(base_url=env.platform_urls.get(name), locator_file=override if override and override.is_file() else None)
    except ValueError as exc:  # an unreadable locator file
        raise TaskFailure(WireErrorCode.LOCATOR_INVALID, str(exc)) from None


def preflight(ctx: TaskContext, platform: str) -> tuple[BrowserEnvironment, PlatformAdapter]:
    """What a browser task needs before it does anything: an account, browser support and the
    platform's adapter; a `TaskFailure` saying which is missing."""
    if ctx.account is None:
        raise TaskFailure(WireErrorCode.ACCOUNT_REQUIRED, "browser tasks act for an account: give the task an `account`")
    if ctx.browser is None:
        raise TaskFailure(WireErrorCode.BROWSER_UNAVAILABLE, "this daemon was started without browser support")
    return ctx.browser, adapter_for(ctx.browser, platform)


async def run_in_browser(ctx: TaskContext, platform: str, action: Action) -> dict[str, Any]:
    """Open the account's profile, run `action(adapter, page)`, always close the browser."""
    from device.browser.profiles import profile_dir
    from device.browser.session import BrowserUnavailable, browser_page, failure_artifacts

    env, adapter = preflight(ctx, platform)
    assert ctx.account is not None
    try:
        async with browser_page(env.options, profile_dir(ctx.data_dir, platform, ctx.account)) as page:
            try:
                return await action(adapter, page)
            except asyncio.CancelledError:
                details = await failure_artifacts(page, env.artifacts_dir, f"{ctx.task_id}-canceled")
                await ctx.progress(None, "canceled: the browser was closed", {"canceled_at": details})
                raise
            except TaskFailure as failure:
                failure.details = {**(failure.details or {}), **await failure_artifacts(page, env.artifacts_dir, ctx.task_id)}
                raise
            except Exception as exc:
                details = await failure_artifacts(page, env.artifacts_dir, ctx.task_id)
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                raise TaskFailure(WireErrorCode.BROWSER_ERROR, f"{type(exc).__name__}: {first}"[:1000], details) from None
    except BrowserUnavailable as exc:
        raise TaskFailure(WireErrorCode.BROWSER_UNAVAILABLE, str(exc)) from None


class LoginHandler(TaskHandler[LoginParams]):
    """`login`: sign the account in (QR code, optionally an SMS code), or with
    `method: cookie_check` only tell whether its saved cookies still log it in."""

    type = "login"
    params_model = LoginParams
    safe_to_retry = True

    async def run(self, ctx: TaskContext, params: LoginParams) -> dict[str, Any]:
        async def act(adapter: PlatformAdapter, page: Any) -> dict[str, Any]:
            if params.method == "cookie_check":
                return {"logged_in": await adapter.check_login(page, ctx), "method": "cookie_check"}
            return {"logged_in": True, **await adapter.login(page, ctx, params)}

        return await run_in_browser(ctx, params.platform, act)


class UploadHandler(TaskHandler[UploadParams]):
    """`upload`: download the video (and cover) into the cache, verify them, publish them."""

    type = "upload"
    params_model = UploadParams

    async def run(self, ctx: TaskContext, params: UploadParams) -> dict[str, Any]:
        from device.platforms.base import MediaFiles
        from device.transfer import check_url, fetch

        env, _adapter = preflight(ctx, params.platform)  # before any download
        policy = env.media_policy
        for url in (params.video_url, params.cover_url):
            if url is not None:
                check_url(policy, str(url))
        cache = ctx.data_dir / "cache"

        async def downloaded(done: int, total: int | None) -> None:
            if total:
                await ctx.progress(round(40 * done / total), f"downloading the video: {done}/{total} bytes")

        video = await fetch(str(params.video_url), cache, size=params.size, sha256=params.sha256, progress=downloaded, policy=policy)
        cover = None
        if params.cover_url is not None:
            cover = await fetch(str(params.cover_url), cache, size=None, sha256=None, progress=_quiet, policy=policy)
        await ctx.progress(40, "video downloaded and verified", {"video_bytes": video.stat().st_size})
        result = await run_in_browser(ctx, params.platform, lambda adapter, page: adapter.upload(
            page, ctx, params, MediaFiles(video=video, cover=cover)
        ))
        for path in (video, cover):  # published: the cache copy is no longer needed
            if path is not None:
                path.unlink(missing_ok=True)
        return result


class ChatHandler(TaskHandler[ChatParams]):
    """`chat`: send a direct message."""

    type = "chat"
    params_model = ChatParams

    async def run(self, ctx: TaskContext, params: ChatParams) -> dict[str, Any]:
        return await run_in_browser(ctx, params.platform, lambda adapter, page: adapter.chat(page, ctx, params))


async def _quiet(_done: int, _total: int | None) -> None:
    return None
