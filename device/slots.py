"""A concurrency limit that can change while tasks run (`max_concurrency` set remotely by the
fleet config): like `asyncio.Semaphore`, but `resize` raises or lowers the limit. Lowering it
stops nothing already running; new tasks wait until fewer than the limit run."""

from __future__ import annotations

import asyncio
from types import TracebackType


class Slots:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._changed = asyncio.Condition()

    async def __aenter__(self) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self.used < self.limit)
            self.used += 1

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        trace: TracebackType | None) -> None:
        async with self._changed:
            self.used -= 1
            self._changed.notify_all()

    async def resize(self, limit: int) -> None:
        async with self._changed:
            self.limit = limit
            self._changed.notify_all()
