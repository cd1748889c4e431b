"""Built-in diagnostic task types: `ping` (report facts), `echo` (round trip), `sleep`
(progress, timeouts and cancellation). All are free of side effects, so safe to retry."""

from __future__ import annotations

import asyncio
from typing import Any

from device.handlers.base import TaskContext, TaskHandler
from schemas.common import utcnow
from schemas.tasks import EchoParams, PingParams, SleepParams


class PingHandler(TaskHandler[PingParams]):
    type = "ping"
    params_model = PingParams
    safe_to_retry = True

    async def run(self, ctx: TaskContext, params: PingParams) -> dict[str, Any]:
        return {"facts": ctx.facts.model_dump(mode="json"), "time": utcnow().isoformat()}


class EchoHandler(TaskHandler[EchoParams]):
    type = "echo"
    params_model = EchoParams
    safe_to_retry = True

    async def run(self, ctx: TaskContext, params: EchoParams) -> dict[str, Any]:
        return {"message": params.message, "data": params.data}


class SleepHandler(TaskHandler[SleepParams]):
    type = "sleep"
    params_model = SleepParams
    safe_to_retry = True

    async def run(self, ctx: TaskContext, params: SleepParams) -> dict[str, Any]:
        step = params.seconds / params.steps
        for done in range(1, params.steps + 1):
            await asyncio.sleep(step)
            await ctx.progress(round(100 * done / params.steps), f"step {done}/{params.steps}")
        return {"slept": params.seconds}
