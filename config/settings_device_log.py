"""Settings of the device daemon's log file (README "Run the daemon as a service"): a rotating
file in the data dir beside stderr, so a PC's history survives where no one reads its console."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings

LOG_FILE_OFF = "off"
DEFAULT_LOG_MAX_BYTES = 5 * 1024 * 1024
DEFAULT_LOG_BACKUPS = 5


class DeviceLogSettings(BaseSettings):
    log_file: str | None = Field(
        None, description="the device daemon's rotating log file; default <data_dir>/logs/device.log, \"off\" for none "
        "(stderr only)",
    )
    log_max_bytes: int = Field(
        DEFAULT_LOG_MAX_BYTES, ge=10 * 1024, le=1024**3, description="size (bytes) at which the log file is rotated",
    )
    log_backups: int = Field(
        DEFAULT_LOG_BACKUPS, ge=1, le=100, description="rotated log files kept (device.log.1 … device.log.N)",
    )

    @field_validator("log_file")
    @classmethod
    def _blank_is_default(cls, value: str | None) -> str | None:
        return None if value is not None and not value.strip() else value

    def resolved_log_file(self, data_dir: Path) -> Path | None:
        """The daemon's log file, None when turned off."""
        if self.log_file is not None and self.log_file.strip().lower() == LOG_FILE_OFF:
            return None
        return Path(self.log_file).expanduser() if self.log_file else data_dir / "logs" / "device.log"
