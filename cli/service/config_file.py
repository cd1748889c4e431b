"""The daemon's one settings file (TOML, as FLEET_CONFIG reads it) that a service points to:
its default place, a check that it exists and holds valid settings, and `--write-config`,
which creates one from a few options."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import platformdirs

from cli.service.common import CONFIG_ENV, ServiceError
from config.logging import redact

CONFIG_NAME = "device.toml"
HOW_TO_CREATE = (
    "create it with `fleet device install-service --write-config --mqtt-url mqtt://user:password@broker:1883 "
    "--id pc-01` (add --config FILE to put it elsewhere), or write it by hand from config/fleet.example.toml"
)


def default_config_file() -> Path:
    """`<user config dir>/mqtt-fleet/device.toml` (~/.config/mqtt-fleet, %LOCALAPPDATA%\\mqtt-fleet, …)."""
    return Path(platformdirs.user_config_dir("mqtt-fleet", appauthor=False)) / CONFIG_NAME


@contextmanager
def _pointing_at(path: Path) -> Iterator[None]:
    before = os.environ.get(CONFIG_ENV)
    os.environ[CONFIG_ENV] = str(path)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(CONFIG_ENV, None)
        else:
            os.environ[CONFIG_ENV] = before


def check_config(path: Path) -> Path:
    """`path` made absolute, once it is known to exist and to hold settings the daemon accepts
    (read as the daemon reads them, with this shell's FLEET_* variables too)."""
    from config import SettingsError, load_settings

    path = path.expanduser().absolute()
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "does not exist"
        raise ServiceError(f"config file {path} {what}; {HOW_TO_CREATE}")
    try:
        with _pointing_at(path):
            load_settings()
    except SettingsError as exc:
        raise ServiceError(f"config file {path}: {exc}") from None
    except OSError as exc:  # e.g. not readable by this user
        raise ServiceError(f"config file {path}: cannot read it ({exc.strerror or type(exc).__name__})") from None
    return path


def check_values(values: dict[str, Any]) -> None:
    """Whether the settings `--write-config` would write are ones the daemon accepts."""
    import tempfile

    from config import SettingsError, load_settings

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / CONFIG_NAME
        path.write_text(config_text(values), encoding="utf-8")
        try:
            with _pointing_at(path):
                load_settings()
        except SettingsError as exc:
            raise ServiceError(f"--write-config: {exc}") from None


def _toml_value(value: Any) -> str:
    """A TOML value for a string, number or list of strings (JSON's syntax is TOML's for these)."""
    return json.dumps(value, ensure_ascii=False)


def config_text(values: dict[str, Any]) -> str:
    lines = ["# The device daemon's settings (README \"Configuration\"); FLEET_* environment variables override them.",
             "# Written by `fleet device install-service --write-config`."]
    lines += [f"{key} = {_toml_value(value)}" for key, value in values.items() if value not in (None, [])]
    return "\n".join(lines) + "\n"


def shown_config(text: str) -> str:
    """The file's text with a password in a broker URL blanked, for printing."""
    import re

    return redact(re.sub(r"(://[^:/@\s\"]+):[^@\s\"]+@", r"\1:<redacted>@", text))


def write_config(path: Path, values: dict[str, Any]) -> None:
    """Create the settings file (owner-only: a broker URL may carry a password); never replace one."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ServiceError(f"config file {path} exists already; edit it, or leave out --write-config") from None
    except OSError as exc:
        raise ServiceError(f"cannot create {path}: {exc.strerror or type(exc).__name__}") from None
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        file.write(config_text(values))
