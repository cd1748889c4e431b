"""Linux: a systemd unit, the user's own (`~/.config/systemd/user/<name>.service`, started at
log-in, or at boot with linger) or with `--system` a system unit in /etc/systemd/system.
It restarts the daemon whatever way it ended, but not after exit status 2 (bad settings: a
restart would fail alike; the journal says why)."""

from __future__ import annotations

import os
import re
from pathlib import Path

from cli.service.common import ServiceFile, ServicePlan, ServiceRequest

SYSTEM_UNIT_DIR = Path("/etc/systemd/system")
RESTART_SEC = 5
# At most 10 starts in 5 minutes: a daemon that keeps crashing at once stops being restarted
# (`systemctl [--user] reset-failed <name>` and start it again); a daemon that ran a while is
# restarted every time, for ever.
START_LIMIT_INTERVAL_SEC = 300
START_LIMIT_BURST = 10
_NEEDS_QUOTES = re.compile(r"[\s\"'\\;]")


def unit_dir(system: bool) -> Path:
    """Where the unit goes: /etc/systemd/system, or the user's `$XDG_CONFIG_HOME/systemd/user`."""
    if system:
        return SYSTEM_UNIT_DIR
    config_home = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config_home) / "systemd" / "user"


def quote(word: str) -> str:
    """One word of ExecStart= or Environment= in systemd's syntax: `%` and `$` doubled (no
    specifiers, no variable expansion), in double quotes when it has spaces or quotes."""
    word = word.replace("%", "%%").replace("$", "$$")
    if not word or _NEEDS_QUOTES.search(word):
        return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return word


def unit_text(request: ServiceRequest) -> str:
    command = request.command
    environment = "".join(f"Environment={quote(f'{key}={value}')}\n" for key, value in command.env.items())
    wanted_by = "multi-user.target" if request.system else "default.target"
    network = "Wants=network-online.target\nAfter=network-online.target\n" if request.system else ""
    return (
        "# Written by `fleet device install-service`; `fleet device uninstall-service` removes it.\n"
        "[Unit]\n"
        f"Description=mqtt-fleet device daemon ({request.name})\n"
        f"{network}"
        f"StartLimitIntervalSec={START_LIMIT_INTERVAL_SEC}\n"
        f"StartLimitBurst={START_LIMIT_BURST}\n"
        "\n[Service]\n"
        "Type=simple\n"
        f"{environment}"
        f"WorkingDirectory={quote(str(request.config_file.parent))}\n"
        f"ExecStart={' '.join(quote(word) for word in command.argv)}\n"
        "Restart=always\n"
        f"RestartSec={RESTART_SEC}\n"
        "RestartPreventExitStatus=2\n"
        "KillSignal=SIGTERM\n"
        "TimeoutStopSec=30\n"
        "\n[Install]\n"
        f"WantedBy={wanted_by}\n"
    )


def plan(request: ServiceRequest) -> ServicePlan:
    unit = f"{request.name}.service"
    systemctl = ["systemctl"] if request.system else ["systemctl", "--user"]
    notes = [] if request.system else [
        "a user service runs while you are logged in; to run it from boot without a log-in: "
        "loginctl enable-linger $USER",
    ]
    return ServicePlan(
        kind="systemd system unit" if request.system else "systemd user unit",
        files=[ServiceFile(unit_dir(request.system) / unit, unit_text(request))],
        register=[[*systemctl, "daemon-reload"], [*systemctl, "enable", unit], [*systemctl, "restart", unit]],
        stop=[[*systemctl, "disable", "--now", unit]],
        cleanup=[[*systemctl, "daemon-reload"]],
        notes=notes,
    )
