"""Built-in diagnostic task types: `ping` (report facts), `echo` (round trip), `sleep`
(progress, timeouts and cancellation), all free of side effects and so safe to retry; and
`append`, a real side effect (a line in a file) that is never run twice for one task."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from device.handlers.base import TaskContext, TaskHandler
from schemas.common import utcnow
from schemas.tasks import AppendParams, EchoParams, PingParams, SleepParams


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


class AppendHandler(TaskHandler[AppendParams]):
    type = "append"
    params_model = AppendParams
    safe_to_retry = False

    async def run(self, ctx: TaskContext, params: AppendParams) -> dict[str, Any]:
        await asyncio.sleep(params.before)
        path = ctx.data_dir / f"appended-{ctx.device_id}.log"
        await asyncio.to_thread(_append_line, path, f"{ctx.task_id}\t{params.line}\n")
        await ctx.progress(50, "line written")
        await asyncio.sleep(params.after)
        return {"file": path.name}


def _append_line(path: Path, line: str) -> None:
    with path.open("a", encoding="utf-8") as file:
        file.write(line)
        file.flush()
        os.fsync(file.fileno())  # the effect is on disk before the task can be reported done
