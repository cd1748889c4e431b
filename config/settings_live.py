"""Settings of the push stream (`GET /api/v1/events/stream`) and the web dashboard."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings


class LiveSettings(BaseSettings):
    live_queue_size: int = Field(
        1000, ge=10, le=1_000_000,
        description="events a stream connection may fall behind by before further ones are dropped for it "
        "(it is told how many, and refetches)",
    )
    live_ping_interval: float = Field(
        15.0, gt=0, le=300, description="seconds between keep-alive comments on an idle stream, so proxies keep it open",
    )
