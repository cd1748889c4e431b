"""Drives Douyin's creator site: QR login (with the SMS check Douyin sometimes adds), cookie
check, video upload with title, tags, cover and scheduled time, and a direct message.

Every URL and selector is in `locators.toml`. Unverified against the live site (see the
package docstring); the flow follows the site as publicly documented.
"""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any

from device.handlers.base import TaskContext, TaskFailure
from device.platforms.base import MediaFiles, PlatformAdapter
from schemas.errors import WireErrorCode
from schemas.tasks import ChatParams, LoginParams, UploadParams

POLL = 1.0
UPLOAD_WAIT = 1800.0  # seconds a video upload to Douyin may take


class DouyinPlatform(PlatformAdapter):
    name = "douyin"
    locator_file = Path(__file__).with_name("locators.toml")

    async def check_login(self, page: Any, ctx: TaskContext) -> bool:
        await self.open(page, "upload")
        await page.wait_for_load_state("networkidle")
        return self.at(page, "upload") and not await self.visible(page, "logged_out_marker")

    async def login(self, page: Any, ctx: TaskContext, params: LoginParams) -> dict[str, Any]:
        if await self.check_login(page, ctx):
            return {"already": True}
        await self.open(page, "login")
        qr = await self.element(page, "qr", timeout=30)
        await ctx.progress(10, "scan the QR code with the Douyin app", {
            "waiting_for": "scan", "qr_png": base64.b64encode(await qr.screenshot()).decode(),
        })
        used_code = False
        deadline = asyncio.get_running_loop().time() + params.wait
        while "/creator-micro/" not in page.url:
            if await self.visible(page, "sms_prompt") and not used_code:
                await ctx.progress(50, "Douyin asks for the SMS code sent to the phone", {"waiting_for": "code"})
                await (await self.element(page, "sms_code")).fill(await ctx.wait_input("code", params.wait))
                await (await self.element(page, "sms_submit")).click()
                used_code = True
            if asyncio.get_running_loop().time() > deadline:
                raise TaskFailure(WireErrorCode.LOGIN_TIMEOUT, f"the QR code was not scanned within {params.wait:g} s")
            await asyncio.sleep(POLL)
        return {"method": "qr+code" if used_code else "qr"}

    async def upload(self, page: Any, ctx: TaskContext, params: UploadParams, media: MediaFiles) -> dict[str, Any]:
        if not await self.check_login(page, ctx):
            raise TaskFailure(WireErrorCode.NOT_LOGGED_IN, "douyin: the account's cookies no longer log it in; run a login task")
        await (await self.element(page, "video_file", state="attached")).set_input_files(str(media.video))
        await page.wait_for_url(f"**{self.locators.pages['publish']}**", timeout=60_000)
        await self._fill_title(page, params.title)
        for tag in params.tags:
            await page.type(self.locators.css("tags"), f"#{tag}")
            await page.press(self.locators.css("tags"), "Space")
        await self._wait_uploaded(page, ctx)
        if media.cover is not None:
            await (await self.element(page, "cover_button")).click()
            await (await self.element(page, "cover_upload_tab")).click()
            await (await self.element(page, "cover_file", state="attached")).set_input_files(str(media.cover))
            await (await self.element(page, "cover_done")).click()
        if params.publish_at is not None:
            await (await self.element(page, "schedule_radio")).click()
            await (await self.element(page, "schedule_input")).click()
            await page.keyboard.press("Control+KeyA")
            await page.keyboard.type(params.publish_at.strftime("%Y-%m-%d %H:%M"))
            await page.keyboard.press("Enter")
        await (await self.element(page, "publish")).click()
        try:
            await page.wait_for_url(f"**{self.locators.pages['manage']}**", timeout=60_000)
        except Exception:
            message = await self._toast(page)
            raise TaskFailure(WireErrorCode.SITE_ERROR, f"douyin did not confirm the publish{': ' + message if message else ''}") from None
        return {"url": page.url, "scheduled": params.publish_at is not None}

    async def _fill_title(self, page: Any, title: str) -> None:
        limit = int(self.locators.texts.get("title_limit", "30"))
        field = page.locator(self.locators.css("title"))
        if await field.count():
            await field.first.fill(title[:limit])
            return
        await (await self.element(page, "title_editor")).click()
        await page.keyboard.press("Control+KeyA")
        await page.keyboard.press("Delete")
        await page.keyboard.type(title)

    async def _wait_uploaded(self, page: Any, ctx: TaskContext) -> None:
        deadline = asyncio.get_running_loop().time() + UPLOAD_WAIT
        while not await self.visible(page, "upload_done"):
            if await self.visible(page, "upload_failed"):
                raise TaskFailure(WireErrorCode.SITE_ERROR, "douyin reported the video upload as failed")
            if asyncio.get_running_loop().time() > deadline:
                raise TaskFailure(WireErrorCode.UPLOAD_TIMEOUT, f"the video was not uploaded within {UPLOAD_WAIT:g} s")
            await ctx.progress(None, "uploading the video to douyin")
            await asyncio.sleep(POLL * 2)

    async def _toast(self, page: Any) -> str:
        toast = page.locator(self.locators.css("error"))
        return (await toast.first.inner_text()).strip()[:300] if await toast.count() else ""

    async def chat(self, page: Any, ctx: TaskContext, params: ChatParams) -> dict[str, Any]:
        await self.open(page, "messages")
        if await self.visible(page, "logged_out_marker"):
            raise TaskFailure(WireErrorCode.NOT_LOGGED_IN, "douyin: the account is not logged in on www.douyin.com; run a login task")
        await (await self.element(page, "chat_search")).fill(params.to)
        contact = self.locators.css("chat_contact").replace("{to}", params.to.replace("'", ""))
        try:
            await page.locator(contact).first.click(timeout=15_000)
        except Exception:
            raise TaskFailure(WireErrorCode.RECIPIENT_NOT_FOUND, f"douyin: no conversation with {params.to!r} was found") from None
        await (await self.element(page, "chat_message")).fill(params.message)
        await (await self.element(page, "chat_send")).click()
        return {"sent_to": params.to}
