"""Settings of schedules (docs/architecture.md#schedules): how late a missed fire time may
still fire once when the controller comes back."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings


class ScheduleSettings(BaseSettings):
    schedule_missed_window: float = Field(
        3600.0, ge=0, le=30 * 86_400,
        description="seconds a missed fire time (every controller was down) may be late and still fire, once, "
        "when a controller is back; older missed times are skipped, logged and shown on the schedule",
    )
