"""What every kind of service shares: the daemon's command line (`daemon_command`, the one place
that names it), the request an install is made from, and the plan a service module returns."""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from schemas.errors import ConfigError

DEFAULT_NAME = "mqtt-fleet-device"
PLATFORMS = ("linux", "macos", "windows")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
CONFIG_ENV = "FLEET_CONFIG"


class ServiceError(ConfigError):
    """An install or uninstall that cannot go on; the message says what to do instead."""

    exit_code = 2


class RegistrationError(ServiceError):
    """A registration command (systemctl, launchctl, schtasks) failed; the message says what to
    run by hand."""

    exit_code = 1


@dataclass(frozen=True)
class DaemonCommand:
    """The daemon as a service starts it: its arguments and the environment it adds."""

    argv: list[str]
    env: dict[str, str]


def daemon_command(config_file: Path) -> DaemonCommand:
    """THE command line every service runs (systemd, launchd and the Windows task render it
    each in their own way): this interpreter running `fleet device`, with its settings file in
    FLEET_CONFIG. Switch it here and every service follows.

    From a Python install it is the launcher (`--managed`), which restarts the daemon into a
    version a remote update installed and rolls back one that fails; a frozen `fleet-device`
    build runs the daemon itself (it is updated by replacing its folder)."""
    env = {CONFIG_ENV: str(config_file)}
    if getattr(sys, "frozen", False):
        return DaemonCommand(argv=[sys.executable], env=env)
    return DaemonCommand(argv=[sys.executable, "-m", "cli", "device", "--managed"], env=env)


def current_platform() -> str:
    """This OS as `--platform` names it."""
    if sys.platform.startswith("win"):
        return "windows"
    return "macos" if sys.platform == "darwin" else "linux"


def check_name(name: str) -> str:
    """A service name: letters, digits, '.', '_', '-' (1–64), the same for a unit, a launchd
    label and a task."""
    if not _NAME.match(name):
        raise ServiceError(f"--name {name!r}: use letters, digits, '.', '_' and '-' (1-64 characters, "
                           "starting with a letter or digit)")
    return name


@dataclass(frozen=True)
class ServiceRequest:
    """What to install: a service `name` running the daemon with `config_file` on `platform`;
    `system`: a system-wide unit (Linux) instead of the user's own."""

    name: str
    config_file: Path
    platform: str
    system: bool = False

    @property
    def command(self) -> DaemonCommand:
        return daemon_command(self.config_file)


@dataclass(frozen=True)
class ServiceFile:
    """A file the service needs: where, and its bytes (`text` for showing it)."""

    path: Path
    text: str
    encoding: str = "utf-8"

    @property
    def data(self) -> bytes:
        return self.text.encode(self.encoding)


@dataclass(frozen=True)
class ServicePlan:
    """An install, as data: the files to write, then `prepare` (may fail: e.g. unloading an
    earlier install) and `register`, the commands that register and start the service; and the
    reverse: `stop` (may fail when not running), then the files are removed, then `cleanup`
    (may fail). `notes` are printed after an install (e.g. systemd's linger)."""

    kind: str
    files: list[ServiceFile]
    register: list[list[str]]
    stop: list[list[str]]
    prepare: list[list[str]] = field(default_factory=list)
    cleanup: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def show_command(argv: list[str], platform: str) -> str:
    """`argv` as one line to paste into that OS's shell."""
    if platform == "windows":
        return subprocess.list2cmdline(argv)
    import shlex

    return shlex.join(argv)
