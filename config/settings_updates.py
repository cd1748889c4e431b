"""Settings of remote update (docs/architecture.md#remote-update): the release public key that the
controller checks a published release against and that a device checks an `update` task's
package against, and how a device drains, and proves a new version healthy, when it updates.

The key is the raw 32-byte Ed25519 public key in base64, as `fleet release keygen` prints it,
given inline (FLEET_UPDATE_PUBLIC_KEY) or as a file holding that text (FLEET_UPDATE_PUBLIC_KEY_FILE).
A device with neither refuses every update (`update_unavailable`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


class UpdateSettings(BaseSettings):
    update_public_key: str | None = Field(
        None, description="controller and device: the operator's release public key (base64, `fleet release keygen`); "
        "releases and updates are refused without it",
    )
    update_public_key_file: Path | None = Field(
        None, description="a file holding the release public key (instead of FLEET_UPDATE_PUBLIC_KEY)",
    )
    update_drain_timeout: float = Field(
        60.0, ge=0, le=3600, description="device: seconds running tasks get to finish before an update restarts the "
        "daemon (the rest are reported interrupted); tasks not started yet are handed back at once",
    )
    update_healthy_after: float = Field(
        10.0, ge=0, le=3600, description="device: seconds a new version must stay connected before the update counts "
        "as done; if it exits sooner, the launcher rolls back",
    )
    update_start_timeout: float = Field(
        120.0, gt=0, le=3600, description="device launcher: seconds a new version gets to connect and prove itself "
        "healthy; past that it is stopped and rolled back",
    )

    @field_validator("update_public_key")
    @classmethod
    def _key(cls, value: str | None) -> str | None:
        from schemas.signing import parse_public_key

        if value is not None:
            parse_public_key(value)  # ValueError names the problem, never the text
        return value

    @model_validator(mode="after")
    def _one_key(self) -> UpdateSettings:
        if self.update_public_key is not None and self.update_public_key_file is not None:
            raise ValueError("give FLEET_UPDATE_PUBLIC_KEY or FLEET_UPDATE_PUBLIC_KEY_FILE, not both")
        return self

    def release_public_key(self) -> Ed25519PublicKey | None:
        """The release public key, or None when none is configured; ValueError for an unreadable file."""
        from schemas.signing import parse_public_key

        text = self.update_public_key
        if self.update_public_key_file is not None:
            try:
                text = self.update_public_key_file.read_text(encoding="utf-8")
            except OSError as exc:
                raise ValueError(f"FLEET_UPDATE_PUBLIC_KEY_FILE {self.update_public_key_file} cannot be read: "
                                 f"{exc.strerror or type(exc).__name__}") from None
        return None if text is None else parse_public_key(text)
