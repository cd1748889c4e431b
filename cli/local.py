"""What the CLI reads from its settings and from the data dir `fleet up` runs in: the admin
API token (`api-token`) and, while `fleet up` runs, where its listeners are (`runtime.json`),
so a CLI in another terminal finds a controller started on any port with no extra setting."""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

from cli.output import fail
from config.settings import FleetSettings, SettingsError, load_settings

TOKEN_FILE = "api-token"
RUNTIME_FILE = "runtime.json"


def settings(**overrides: Any) -> FleetSettings:
    """The settings, or one error line naming the bad setting and exit 2."""
    try:
        return load_settings(**overrides)
    except SettingsError as exc:
        fail(str(exc))


def local_token(config: FleetSettings) -> str | None:
    """The CLI's token: FLEET_API_TOKEN, else the one `fleet up` keeps in the data dir."""
    if config.api_token is not None:
        return config.api_token.get_secret_value()
    path = config.data_dir / TOKEN_FILE
    return path.read_text(encoding="utf-8").strip() if path.is_file() else None


def ensure_local_token(config: FleetSettings) -> str:
    """The admin token `fleet up` runs with: FLEET_ADMIN_TOKEN, else one kept in the data dir
    (created on first use, readable by its owner only where the OS supports that)."""
    if config.admin_token is not None:
        return config.admin_token.get_secret_value()
    path = config.data_dir / TOKEN_FILE
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(32), encoding="utf-8")
        path.chmod(0o600)
    return path.read_text(encoding="utf-8").strip()


@dataclass(frozen=True)
class Runtime:
    """Where a running `fleet up` listens (no secrets: the MQTT URL carries no login)."""

    api_url: str
    mqtt_url: str | None
    device_id: str | None
    site_url: str | None
    pid: int


def write_runtime(data_dir: Path, runtime: Runtime) -> Path:
    path = data_dir / RUNTIME_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(runtime), indent=2), encoding="utf-8")
    os.replace(tmp, path)
    return path


def remove_runtime(data_dir: Path) -> None:
    """Remove the runtime file if it is this process's (another `fleet up` may have taken over)."""
    found = read_runtime(data_dir, alive_only=False)
    if found is not None and found.pid == os.getpid():
        (data_dir / RUNTIME_FILE).unlink(missing_ok=True)


def read_runtime(data_dir: Path, *, alive_only: bool = True) -> Runtime | None:
    """The running `fleet up` of this data dir; None when there is none (or it died)."""
    try:
        raw = json.loads((data_dir / RUNTIME_FILE).read_text(encoding="utf-8"))
        runtime = Runtime(**{key: raw.get(key) for key in Runtime.__dataclass_fields__})
    except (OSError, ValueError, TypeError):
        return None
    if not isinstance(runtime.api_url, str) or not isinstance(runtime.pid, int):
        return None
    if alive_only and not psutil.pid_exists(runtime.pid):
        return None
    return runtime


def api_url(config: FleetSettings) -> str:
    """The controller the CLI talks to: FLEET_API_URL, else the running `fleet up` of the
    data dir, else http://FLEET_API_HOST:FLEET_API_PORT."""
    if config.api_url is None and "api_port" not in config.model_fields_set:
        runtime = read_runtime(config.data_dir)
        if runtime is not None:
            return runtime.api_url.rstrip("/")
    return config.resolved_api_url
