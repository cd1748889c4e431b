"""`fleet device install-service` and `fleet device uninstall-service` (typer): options in,
a `ServicePlan` from the module of the chosen OS, carried out or printed (`--dry-run`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from cli.output import fail
from cli.service import actions, launchd, systemd, windows_task
from cli.service.common import (
    DEFAULT_NAME,
    PLATFORMS,
    ServiceError,
    ServicePlan,
    ServiceRequest,
    check_name,
    current_platform,
)
from cli.service.config_file import (
    check_config,
    check_values,
    config_text,
    default_config_file,
    shown_config,
    write_config,
)

_PLANNERS = {"linux": systemd.plan, "macos": launchd.plan, "windows": windows_task.plan}
NAME_HELP = "service name (unit, launchd label, task name); another name installs a second daemon beside the first"
PLATFORM_HELP = "the OS to write for (default: this one); another OS only with --dry-run"


def _say(line: str) -> None:
    typer.echo(line)


def _request(name: str, config: Path, platform: Optional[str], system: bool, dry_run: bool) -> ServiceRequest:
    """The request, once the options fit together."""
    target = (platform or current_platform()).lower()
    if target not in PLATFORMS:
        raise ServiceError(f"--platform {platform!r}: use one of {', '.join(PLATFORMS)}")
    if target != current_platform() and not dry_run:
        raise ServiceError(f"this is {current_platform()}: a {target} service can only be shown (--dry-run)")
    if system and target != "linux":
        raise ServiceError("--system is for Linux (a system-wide systemd unit)")
    return ServiceRequest(check_name(name), config.expanduser().absolute(), target, system)


def _plan(request: ServiceRequest) -> ServicePlan:
    return _PLANNERS[request.platform](request)


def install_service(
    config: Path = typer.Option(default_config_file(), "--config", help="the daemon's TOML settings file (FLEET_CONFIG)"),
    write_config_file: bool = typer.Option(False, "--write-config", help="create --config from the options below first"),
    mqtt_url: Optional[str] = typer.Option(None, "--mqtt-url", help="with --write-config: the broker URL"),
    device_id: Optional[str] = typer.Option(None, "--id", help="with --write-config: the device id"),
    device_name: Optional[str] = typer.Option(None, "--device-name", help="with --write-config: the display name"),
    group: list[str] = typer.Option([], "--group", "-g", help="with --write-config: a group; repeatable"),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="with --write-config: the daemon's data dir"),
    name: str = typer.Option(DEFAULT_NAME, "--name", help=NAME_HELP),
    system: bool = typer.Option(False, "--system", help="Linux: a system unit in /etc/systemd/system (as root)"),
    platform: Optional[str] = typer.Option(None, "--platform", help=PLATFORM_HELP),
    dry_run: bool = typer.Option(False, "--dry-run", help="print the files and commands; change nothing"),
    register: bool = typer.Option(True, "--register/--no-register", help="run the registration commands (else print them)"),
) -> None:
    """Run the device daemon as an OS service: a systemd unit, a launchd agent or a Windows task."""
    values: dict[str, Any] = {"mqtt_url": mqtt_url, "device_id": device_id, "device_name": device_name,
                              "groups": group, "data_dir": str(data_dir.expanduser().absolute()) if data_dir else None}
    if not write_config_file and any(value not in (None, []) for value in values.values()):
        fail("--mqtt-url, --id, --device-name, --group and --data-dir go with --write-config (or edit the config file)")
    if write_config_file and mqtt_url is None:
        fail("--write-config needs --mqtt-url: the broker the daemon connects to")
    try:
        request = _request(name, config, platform, system, dry_run)
        _install(request, values if write_config_file else None, dry_run, register)
    except ServiceError as exc:
        fail(str(exc), exc.exit_code)


def _install(request: ServiceRequest, values: dict[str, Any] | None, dry_run: bool, register: bool) -> None:
    here = request.platform == current_platform()
    plan = _plan(request)
    if values is not None:
        check_values(values)
        if request.config_file.exists():
            raise ServiceError(f"config file {request.config_file} exists already; edit it, or leave out --write-config")
    if dry_run:
        if values is not None:
            _say(f"# would write {request.config_file} (the daemon's settings):")
            _say(shown_config(config_text(values)).rstrip("\n"))
        elif here:
            check_config(request.config_file)
        actions.describe_dry_run(plan, request.platform, _say, install=True)
        return
    if values is not None:
        write_config(request.config_file, values)
        _say(f"wrote {request.config_file} (the daemon's settings)")
    check_config(request.config_file)
    actions.install(plan, request.platform, _say, register=register)


def uninstall_service(
    name: str = typer.Option(DEFAULT_NAME, "--name", help=NAME_HELP),
    system: bool = typer.Option(False, "--system", help="Linux: the system unit in /etc/systemd/system"),
    platform: Optional[str] = typer.Option(None, "--platform", help=PLATFORM_HELP),
    dry_run: bool = typer.Option(False, "--dry-run", help="print what would be done; change nothing"),
) -> None:
    """Stop and unregister the daemon's service and remove its file (the config file stays)."""
    try:
        request = _request(name, default_config_file(), platform, system, dry_run)
        plan = _plan(request)
        if dry_run:
            actions.describe_dry_run(plan, request.platform, _say, install=False)
        else:
            actions.uninstall(plan, request.platform, _say)
    except ServiceError as exc:
        fail(str(exc), exc.exit_code)
