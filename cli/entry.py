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


def main() -> None:
    """`fleet`: the daemon for `fleet device [--id ID] [--name NAME] [--config FILE]`, else the whole CLI."""
    options = daemon_options(sys.argv[1:])
    if options is None:
        from cli.main import main as cli_main

        cli_main()
        return
    run_daemon(**options)


def daemon_options(argv: Sequence[str]) -> dict[str, str | None] | None:
    """The daemon's options when `argv` runs the daemon and nothing else; None for anything
    the typer app should handle (and explain, when it is wrong)."""
    if list(argv[:1]) != ["device"]:
        return None
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False, exit_on_error=False)
    parser.add_argument("--id", dest="device_id")
    parser.add_argument("--name")
    parser.add_argument("--config")
    try:
        parsed, rest = parser.parse_known_args(argv[1:])
    except argparse.ArgumentError:
        return None
    return None if rest else {"device_id": parsed.device_id, "name": parsed.name, "config": parsed.config}


def run_daemon(device_id: str | None, name: str | None, config: str | None = None) -> None:
    """Run the device daemon until stopped; a bad setting or an unreadable device id file is
    one error line on stderr and exit status 2, like the CLI's other start-up errors.
    `config` is the TOML settings file (as FLEET_CONFIG; the Windows task passes it so, having
    no environment of its own)."""
    import os

    from config import SettingsError, load_settings
    from device.daemon import run_device

    if config is not None:
        os.environ["FLEET_CONFIG"] = config

    try:
        run_device(load_settings(device_id=device_id, device_name=name))
    except (SettingsError, ValueError) as exc:  # ValueError: an unreadable device id file
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
