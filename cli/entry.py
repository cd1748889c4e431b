"""The `fleet` entry point. `fleet device`, the daemon every PC runs all day, starts without
the rest of the CLI.

The CLI's typer app, rich and its command modules cost a process about 6 MB of memory, an
eighth of the idle daemon's (docs/architecture.md#device-memory). So `fleet device` with
nothing but the daemon's own options (`--id`, `--name`, `--config`) is parsed here with the standard
library and runs the daemon; anything else (a sub-command such as `fleet device add`, `--help`, a mistyped option) goes to
the typer app in `cli.main`, which also runs the daemon through `run_daemon`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any


def main() -> None:
    """`fleet`: the daemon for `fleet device [--managed] [--id ID] [--name NAME] [--config FILE]`, else the whole CLI."""
    options = daemon_options(sys.argv[1:])
    if options is None:
        from cli.main import main as cli_main

        cli_main()
        return
    run_daemon(**options)


def daemon_options(argv: Sequence[str]) -> dict[str, Any] | None:
    """The daemon's options when `argv` runs the daemon and nothing else; None for anything
    the typer app should handle (and explain, when it is wrong)."""
    if list(argv[:1]) != ["device"]:
        return None
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False, exit_on_error=False)
    parser.add_argument("--id", dest="device_id")
    parser.add_argument("--name")
    parser.add_argument("--config")
    parser.add_argument("--managed", action="store_true")
    try:
        parsed, rest = parser.parse_known_args(argv[1:])
    except argparse.ArgumentError:
        return None
    if rest:
        return None
    options: dict[str, Any] = {"device_id": parsed.device_id, "name": parsed.name, "config": parsed.config}
    if parsed.managed:
        options["managed"] = True
    return options


def run_daemon(device_id: str | None, name: str | None, config: str | None = None, managed: bool = False) -> None:
    """Run the device daemon until stopped (`managed`: under the launcher, which restarts it into
    a new version after a remote update); a bad setting or an unreadable device id file is one
    error line on stderr and exit status 2, like the CLI's other start-up errors.
    `config` is the TOML settings file (as FLEET_CONFIG; the Windows task passes it so, having
    no environment of its own)."""
    import os

    from config import SettingsError, load_settings

    if config is not None:
        os.environ["FLEET_CONFIG"] = config

    try:
        settings = load_settings(device_id=device_id, device_name=name)
        if managed and getattr(sys, "frozen", False):
            raise SettingsError("--managed: a fleet-device build is updated by replacing its folder; run it without --managed")
        if managed:
            from device.launcher import run_launcher

            args = [*(["--id", device_id] if device_id else []), *(["--name", name] if name else [])]
            code = run_launcher(settings, args)
        else:
            from device.daemon import run_device

            code = run_device(settings)
    except (SettingsError, ValueError) as exc:  # ValueError: an unreadable device id file
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    if code:
        raise SystemExit(code)
