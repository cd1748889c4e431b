"""Settings of the session vault (docs/architecture.md#the-session-vault): the operator's vault
key, which devices hold and the controller never does."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings


class VaultSettings(BaseSettings):
    vault_key_file: Path | None = Field(
        None, description="devices only: the file `fleet vault keygen` wrote; with it the device encrypts and "
        "decrypts account session backups (never set it on a controller: it must not be able to read them)",
    )
    session_backup_after_login: bool = Field(
        False, description="controller: after each interactive login of an account, ask its device for a session "
        "backup (once per login; the device needs FLEET_VAULT_KEY_FILE)",
    )
