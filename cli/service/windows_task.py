"""Windows: a Task Scheduler task, not a Windows service. A real service must answer the
Service Control Manager, which a Python program can do only through pywin32 (or a wrapper such
as NSSM on every PC); a task needs neither, runs in the user's session (a browser task's window
can be shown) and restarts on failure. The task starts at the user's log-on, has no time limit,
is restarted every minute after a failure (999 times, Task Scheduler's maximum) and is started
once right after the install. Task Scheduler has no environment per task, so the task passes
the settings file as `fleet device --config FILE`; it runs pythonw.exe beside python.exe (no
console window a user could close), and the daemon logs to its rotating file."""

from __future__ import annotations

import getpass
import os
from pathlib import Path, PureWindowsPath
from xml.sax.saxutils import escape

import platformdirs

from cli.service.common import CONFIG_ENV, ServiceError, ServiceFile, ServicePlan, ServiceRequest, show_command

TASK_NAMESPACE = "http://schemas.microsoft.com/windows/2004/02/mit/task"


def task_file(name: str) -> Path:
    """Where the task's XML is kept (schtasks reads it from there): the fleet's config dir."""
    return Path(platformdirs.user_config_dir("mqtt-fleet", appauthor=False)) / f"{name}.task.xml"


def windowless(executable: str) -> str:
    """pythonw.exe for python.exe: the same interpreter without a console window."""
    path = PureWindowsPath(executable)
    return str(path.with_name("pythonw.exe")) if path.name.lower() == "python.exe" else executable


def task_user() -> str:
    """The user the task runs as and whose log-on starts it, DOMAIN\\user where known."""
    domain = os.environ.get("USERDOMAIN")
    user = os.environ.get("USERNAME") or getpass.getuser()
    return f"{domain}\\{user}" if domain else user


def task_action(request: ServiceRequest) -> tuple[str, str]:
    """The task's program and its arguments: the daemon command, FLEET_CONFIG as `--config`."""
    command = request.command
    unknown = sorted(set(command.env) - {CONFIG_ENV})
    if unknown:  # Task Scheduler has nowhere to put them
        raise ServiceError(f"a Windows task cannot set environment variables ({', '.join(unknown)})")
    arguments = [*command.argv[1:], "--config", command.env[CONFIG_ENV]]
    return windowless(command.argv[0]), show_command(arguments, "windows")


def task_xml(request: ServiceRequest) -> str:
    program, arguments = task_action(request)
    user = escape(task_user())
    return f"""<?xml version="1.0" encoding="UTF-16"?>
<!-- Written by `fleet device install-service`; `fleet device uninstall-service` removes it. -->
<Task version="1.2" xmlns="{TASK_NAMESPACE}">
  <RegistrationInfo>
    <Description>mqtt-fleet device daemon ({escape(request.name)})</Description>
  </RegistrationInfo>
  <Triggers>
    <LogonTrigger>
      <Enabled>true</Enabled>
      <UserId>{user}</UserId>
    </LogonTrigger>
  </Triggers>
  <Principals>
    <Principal id="Author">
      <UserId>{user}</UserId>
      <LogonType>InteractiveToken</LogonType>
      <RunLevel>LeastPrivilege</RunLevel>
    </Principal>
  </Principals>
  <Settings>
    <MultipleInstancesPolicy>IgnoreNew</MultipleInstancesPolicy>
    <DisallowStartIfOnBatteries>false</DisallowStartIfOnBatteries>
    <StopIfGoingOnBatteries>false</StopIfGoingOnBatteries>
    <AllowHardTerminate>true</AllowHardTerminate>
    <StartWhenAvailable>true</StartWhenAvailable>
    <RunOnlyIfNetworkAvailable>false</RunOnlyIfNetworkAvailable>
    <IdleSettings>
      <StopOnIdleEnd>false</StopOnIdleEnd>
      <RestartOnIdle>false</RestartOnIdle>
    </IdleSettings>
    <AllowStartOnDemand>true</AllowStartOnDemand>
    <Enabled>true</Enabled>
    <Hidden>false</Hidden>
    <RunOnlyIfIdle>false</RunOnlyIfIdle>
    <WakeToRun>false</WakeToRun>
    <ExecutionTimeLimit>PT0S</ExecutionTimeLimit>
    <Priority>7</Priority>
    <RestartOnFailure>
      <Interval>PT1M</Interval>
      <Count>999</Count>
    </RestartOnFailure>
  </Settings>
  <Actions Context="Author">
    <Exec>
      <Command>{escape(program)}</Command>
      <Arguments>{escape(arguments)}</Arguments>
      <WorkingDirectory>{escape(str(request.config_file.parent))}</WorkingDirectory>
    </Exec>
  </Actions>
</Task>
"""


def plan(request: ServiceRequest) -> ServicePlan:
    path = task_file(request.name)
    return ServicePlan(
        kind="Task Scheduler task",
        # UTF-16 with a byte order mark, as schtasks exports and reads task XML.
        files=[ServiceFile(path, task_xml(request), encoding="utf-16")],
        register=[["schtasks", "/Create", "/TN", request.name, "/XML", str(path), "/F"],
                  ["schtasks", "/Run", "/TN", request.name]],
        stop=[["schtasks", "/End", "/TN", request.name]],
        cleanup=[["schtasks", "/Delete", "/TN", request.name, "/F"]],
        notes=["the daemon runs windowless (pythonw.exe); its log is the rotating file in its data dir"],
    )
