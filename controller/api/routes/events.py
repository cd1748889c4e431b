"""`GET /api/v1/events/stream`: the push stream (Server-Sent Events) of task changes, task
events, device presence and load, and alerts, for scripts (`fleet watch`) and the dashboard.

Read scope: a bearer token, or the dashboard's session cookie (browsers' EventSource cannot send
headers). Each SSE message is one `schemas.live` event: `event:` is its kind, `data:` its JSON.
A comment line is sent every FLEET_LIVE_PING_INTERVAL seconds so proxies keep an idle stream
open. There is no replay: every connection starts with a `hello` event, and a client that
reconnects refetches what it shows. With several controllers, a stream carries what the
controller it is connected to recorded (docs/architecture.md#push-stream).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated

import anyio
from fastapi import APIRouter, HTTPException, Query, Request
from sse_starlette.sse import EventSourceResponse, ServerSentEvent

from controller.api.security import bearer, require
from controller.dashboard.session import SESSION_COOKIE, check_token
from controller.live import LiveBus, StreamFilter
from controller.services import tokens
from schemas.live import LIVE_KINDS, Hello

router = APIRouter(prefix="/events", tags=["events"])
SHUTDOWN_GRACE = 2.0  # seconds an open stream has to end by itself when the controller stops
_bearer_read = require("read")

Csv = Annotated[list[str] | None, Query(max_length=2000)]


def _split(values: list[str] | None) -> frozenset[str]:
    """`?kinds=a,b&kinds=c` → {a, b, c}."""
    return frozenset(part.strip() for value in values or [] for part in value.split(",") if part.strip())


async def _reader(request: Request) -> None:
    """Admit a bearer token with read scope, or else the dashboard's session cookie."""
    cookie = request.cookies.get(SESSION_COOKIE)
    if request.headers.get("authorization") or not cookie:
        await _bearer_read(request, await bearer(request))
        return
    try:
        await check_token(request, cookie)
    except tokens.TokenRefused as exc:
        raise HTTPException(401, str(exc), headers={"WWW-Authenticate": "Bearer"}) from None


def stream_filter(kinds: Csv, device: Csv, task: Csv) -> StreamFilter:
    wanted = _split(kinds)
    unknown = sorted(wanted - set(LIVE_KINDS))
    if unknown:
        raise HTTPException(422, f"unknown event kind(s) {', '.join(unknown)}; use some of {', '.join(LIVE_KINDS)}")
    return StreamFilter(kinds=wanted, devices=_split(device), tasks=_split(task))


@router.get(
    "/stream",
    summary="Follow the fleet live (Server-Sent Events)",
    response_class=EventSourceResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "an endless stream of events"}},
)
async def stream(
    request: Request,
    kinds: Csv = None,
    device: Csv = None,
    task: Csv = None,
) -> EventSourceResponse:
    """Events as they are recorded: `task`, `task_event`, `presence`, `load`, `alert` (and
    `hello` first, `dropped` when this connection fell behind). Filter with `kinds`, `device`
    and `task` (comma-separated or repeated). See `schemas/live.py` for the shapes."""
    await _reader(request)
    chosen = stream_filter(kinds, device, task)
    bus: LiveBus = request.app.state.live
    subscription = bus.subscribe(chosen)
    hello = Hello(controller=str(getattr(request.app.state.mqtt, "client_id", "")))

    shutdown = anyio.Event()  # set by sse-starlette when the server begins to stop

    async def close_on_shutdown() -> None:
        await shutdown.wait()
        subscription.close()  # the stream then ends like any other, its response complete

    async def events() -> AsyncIterator[ServerSentEvent]:
        watcher = asyncio.ensure_future(close_on_shutdown())
        try:
            yield ServerSentEvent(data=hello.model_dump_json(), event=hello.kind)
            while True:
                event = await subscription.next()
                if event is None:
                    return
                yield ServerSentEvent(data=event.model_dump_json(), event=event.kind)
        finally:
            watcher.cancel()
            bus.unsubscribe(subscription)

    ping = float(request.app.state.settings.live_ping_interval)
    return EventSourceResponse(
        events(), ping=int(max(1, ping)), headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        shutdown_event=shutdown, shutdown_grace_period=SHUTDOWN_GRACE,
    )

