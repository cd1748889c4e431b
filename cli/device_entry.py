"""`fleet-device`: `fleet device` as a program of its own, the one the self-contained build
(deploy/device-build, PyInstaller) runs on a PC with no Python.

Its arguments are those that follow `fleet device`: `fleet-device --id pc-01` runs the daemon
as `fleet device --id pc-01` does (a leading `device` is accepted too, so a command copied from
the docs works), `fleet-device --version` prints the version, and anything else goes to the
`fleet device` command group (`tag`, `groups`, `revoke`, `delete`, `restore`, `--help`).
Nothing here imports the rest of the CLI, the controller or the broker, which the build leaves out.
"""

from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from cli.entry import daemon_options, run_daemon
from config.settings import DEFAULT_CONFIG_FILE, ENV_PREFIX

PROGRAM = "fleet-device"
# typer adds these to a group of its own; `fleet` has them off too (cli/main.py: add_completion=False).
COMPLETION_OPTIONS = ("install_completion", "show_completion")


def package_version() -> str:
    """The installed (or bundled) mqtt-fleet version; "unknown" without its metadata."""
    try:
        return version("mqtt-fleet")
    except PackageNotFoundError:
        return "unknown"


def config_beside_program(
    environ: MutableMapping[str, str], frozen: bool, program: Path, cwd: Path
) -> Path | None:
    """Point FLEET_CONFIG (in `environ`) at the `fleet.toml` beside a frozen `program`, unless
    FLEET_CONFIG is set or `cwd` has a `fleet.toml` (both win, as for `fleet`); the file chosen."""
    if not frozen or f"{ENV_PREFIX}CONFIG" in environ or (cwd / DEFAULT_CONFIG_FILE).is_file():
        return None
    beside = program.resolve().parent / DEFAULT_CONFIG_FILE
    if not beside.is_file():
        return None
    environ[f"{ENV_PREFIX}CONFIG"] = str(beside)
    return beside


def main(argv: Sequence[str] | None = None) -> None:
    """`fleet-device`: the daemon, `--version`, or a `fleet device` sub-command."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["device"]:
        args = args[1:]
    if args in (["--version"], ["-V"]):
        print(f"{PROGRAM} (mqtt-fleet) {package_version()}")
        return
    config_beside_program(os.environ, getattr(sys, "frozen", False), Path(sys.executable), Path.cwd())
    options = daemon_options(["device", *args])
    if options is not None:
        run_daemon(**options)
        return
    import typer

    from cli.devices import app
    from cli.output import plain_metavars

    command = typer.main.get_command(app)
    command.params = [param for param in command.params if param.name not in COMPLETION_OPTIONS]
    plain_metavars(command)
    command(args=args, prog_name=PROGRAM)


if __name__ == "__main__":  # the frozen build's script (deploy/device-build/fleet-device.spec)
    main()
