"""macOS: a launchd agent (`~/Library/LaunchAgents/<name>.plist`), started at log-in and kept
alive (started again whatever way it ended, at most every `ThrottleInterval` seconds); stderr
goes to `~/Library/Logs/<name>.log`, where Console.app shows it."""

from __future__ import annotations

import os
import plistlib
from pathlib import Path

from cli.service.common import ServiceFile, ServicePlan, ServiceRequest

THROTTLE_INTERVAL = 10


def agent_dir() -> Path:
    return Path.home() / "Library" / "LaunchAgents"


def stderr_log(name: str) -> Path:
    return Path.home() / "Library" / "Logs" / f"{name}.log"


def plist_text(request: ServiceRequest) -> str:
    command = request.command
    agent = {
        "Label": request.name,
        "ProgramArguments": command.argv,
        "EnvironmentVariables": command.env,
        "WorkingDirectory": str(request.config_file.parent),
        "RunAtLoad": True,
        "KeepAlive": True,
        "ThrottleInterval": THROTTLE_INTERVAL,
        "StandardErrorPath": str(stderr_log(request.name)),
        "StandardOutPath": str(stderr_log(request.name)),
    }
    return plistlib.dumps(agent, sort_keys=False).decode("utf-8")


def gui_domain() -> str:
    """launchctl's domain of the user's log-in session (`gui/<uid>`); `gui/$UID` shown where
    the plan is made on an OS without uids (a dry run on Windows)."""
    getuid = getattr(os, "getuid", None)
    return f"gui/{getuid()}" if getuid is not None else "gui/$UID"


def plan(request: ServiceRequest) -> ServicePlan:
    path = agent_dir() / f"{request.name}.plist"
    domain = gui_domain()
    return ServicePlan(
        kind="launchd agent",
        files=[ServiceFile(path, plist_text(request))],
        # bootout first: bootstrap refuses a label that is loaded already (a reinstall).
        prepare=[["launchctl", "bootout", f"{domain}/{request.name}"]],
        register=[["launchctl", "bootstrap", domain, str(path)]],
        stop=[["launchctl", "bootout", f"{domain}/{request.name}"]],
        notes=[f"stderr of the daemon: {stderr_log(request.name)}"],
    )
