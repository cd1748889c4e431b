"""Drives the reference platform: QR login with an optional SMS code, video upload, chat.

All URLs and selectors come from `locators.toml` beside this file.
"""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from device.handlers.base import TaskContext, TaskFailure
from device.platforms.base import MediaFiles, PlatformAdapter
from schemas.errors import WireErrorCode
from schemas.tasks import ChatParams, LoginParams, UploadParams

POLL = 0.3  # seconds between looks at a page that changes by itself


def scan_link(base_url: str, token: str, account: str | None) -> str:
    """The link that plays the phone scanning the QR code; it names the task's account so the
    approval page offers that account."""
    query = {"token": token, **({"account": account} if account else {})}
    return f"{base_url.rstrip('/')}/_phone/scan?{urlencode(query)}"


class ReferencePlatform(PlatformAdapter):
    name = "reference"
    locator_file = Path(__file__).with_name("locators.toml")

    async def check_login(self, page: Any, ctx: TaskContext) -> bool:
        await self.open(page, "home")
        return self.at(page, "home") and await self.visible(page, "account_name")

    async def login(self, page: Any, ctx: TaskContext, params: LoginParams) -> dict[str, Any]:
        await self.open(page, "login")
        if self.at(page, "home"):
            return {"account_name": await self._account_name(page), "already": True}
        qr = await self.element(page, "qr")
        token = await qr.get_attribute("data-token")
        picture = base64.b64encode(await qr.screenshot()).decode()
        await ctx.progress(10, "scan the QR code with the platform's app", {
            "waiting_for": "scan", "qr_png": picture,
            "scan_url": scan_link(self.locators.base_url, token or "", ctx.account),
        })
        used_code = False
        deadline = asyncio.get_running_loop().time() + params.wait
        while not self.at(page, "home"):
            if await self.visible(page, "sms_form"):
                await self._enter_code(page, ctx, params.wait)
                used_code = True
                continue
            if asyncio.get_running_loop().time() > deadline:
                raise TaskFailure(WireErrorCode.LOGIN_TIMEOUT, f"the QR code was not scanned within {params.wait:g} s")
            await asyncio.sleep(POLL)
        return {"account_name": await self._account_name(page), "method": "qr+code" if used_code else "qr"}

    async def _enter_code(self, page: Any, ctx: TaskContext, wait: float) -> None:
        """Ask the operator for the SMS code until the site takes one."""
        details: dict[str, Any] = {"waiting_for": "code"}
        message = "waiting for the verification code sent to the phone"
        wrong = self.locators.texts.get("wrong_code", "wrong code")
        while True:
            await ctx.progress(50, message, details)
            code = await ctx.wait_input("code", wait)
            await (await self.element(page, "sms_code")).fill(code)
            await (await self.element(page, "sms_submit")).click()
            if not await self._refused(page, wrong):
                return
            message, details = "the code was wrong; send the right one", {"waiting_for": "code", "wrong_code": True}

    async def _refused(self, page: Any, wrong: str) -> bool:
        """After a code was submitted: False once the site logs in, True when it says the code is wrong."""
        from playwright.async_api import Error as PlaywrightError

        status = page.locator(self.locators.css("login_status"))
        for _ in range(int(15 / POLL)):
            if self.at(page, "home"):
                return False
            try:
                if wrong in await status.inner_text(timeout=POLL * 1000):
                    return True
            except PlaywrightError:
                pass  # the page is navigating to the home page
            await asyncio.sleep(POLL)
        raise TaskFailure(WireErrorCode.LOGIN_FAILED, "the site neither accepted nor refused the code within 15 s")

    async def _account_name(self, page: Any) -> str:
        return (await (await self.element(page, "account_name")).inner_text()).strip()

    async def _require_login(self, page: Any, name: str) -> None:
        await self.open(page, name)
        if not self.at(page, name):
            raise TaskFailure(WireErrorCode.NOT_LOGGED_IN, f"{self.name}: the account is not logged in (the site sent it to "
                              f"{page.url}); run a login task for it first")

    async def upload(self, page: Any, ctx: TaskContext, params: UploadParams, media: MediaFiles) -> dict[str, Any]:
        await self._require_login(page, "upload")
        await (await self.element(page, "video_file", state="attached")).set_input_files(str(media.video))
        await (await self.element(page, "title")).fill(params.title)
        await (await self.element(page, "tags")).fill(", ".join(params.tags))
        if media.cover is not None:
            await (await self.element(page, "cover_file", state="attached")).set_input_files(str(media.cover))
        if params.publish_at is not None:
            await (await self.element(page, "publish_at")).fill(params.publish_at.strftime("%Y-%m-%dT%H:%M"))
        publish = await self.element(page, "publish", state="attached")
        bar = await self.element(page, "upload_progress", state="attached")
        while not await publish.is_enabled():
            if await self.visible(page, "error"):
                raise TaskFailure(WireErrorCode.SITE_ERROR, await self._error_text(page))
            percent = await bar.evaluate("element => Number(element.value) || 0")
            await ctx.progress(40 + round(0.55 * percent), f"uploading to {self.name}: {percent:.0f}%")
            await asyncio.sleep(POLL)
        await ctx.progress(95, f"video uploaded to {self.name}; publishing")
        await publish.click()
        if await self.first_of(page, ["publish_result", "error"], timeout=30) == "error":
            raise TaskFailure(WireErrorCode.SITE_ERROR, await self._error_text(page))
        result = await self.element(page, "publish_result")
        await ctx.progress(100, "published")
        return {"video_id": await result.get_attribute("data-video-id"), "url": page.url}

    async def chat(self, page: Any, ctx: TaskContext, params: ChatParams) -> dict[str, Any]:
        await self._require_login(page, "messages")
        await (await self.element(page, "chat_to")).fill(params.to)
        await (await self.element(page, "chat_message")).fill(params.message)
        await (await self.element(page, "chat_send")).click()
        if await self.first_of(page, ["send_result", "error"]) == "error":
            raise TaskFailure(WireErrorCode.SITE_ERROR, await self._error_text(page))
        return {"sent_to": params.to}

    async def _error_text(self, page: Any) -> str:
        text = (await (await self.element(page, "error")).inner_text()).strip()
        return f"{self.name} showed an error: {text[:500]}"
