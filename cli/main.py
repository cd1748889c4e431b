"""The root `fleet` command: `--version`, and every command group assembled from its module."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Optional

import typer

from cli import (
    accounts,
    devices,
    env,
    files,
    fleet_config,
    housekeeping,
    identities,
    jobs,
    processes,
    releases,
    schedules,
    simulate,
    stats,
    targets,
    tasks,
    tokens,
    up,
    vault,
    watch,
)
from cli.output import plain_metavars

app = typer.Typer(help="Command a fleet of PCs over MQTT.", no_args_is_help=True, add_completion=False)
app.command("up")(up.up)
app.command("broker")(processes.broker)
app.command("controller")(processes.controller)
app.command("env")(env.env)
app.add_typer(devices.app, name="device")
app.command("simulate")(simulate.simulate)
app.command("devices")(devices.list_devices)
app.add_typer(targets.app, name="target")
app.add_typer(tasks.app, name="task")
app.command("broadcast")(tasks.broadcast)
app.add_typer(jobs.app, name="job")
app.add_typer(accounts.app, name="account")
app.add_typer(files.app, name="file")
app.add_typer(tokens.app, name="token")
app.add_typer(identities.app, name="identity")
app.add_typer(schedules.app, name="schedule")
app.add_typer(schedules.pacing_app, name="pacing")
app.add_typer(fleet_config.app, name="config")
app.add_typer(releases.app, name="release")
app.add_typer(vault.app, name="vault")
app.command("stats")(stats.stats)
app.command("watch")(watch.watch)
app.command("prune")(housekeeping.prune)
devices.app.command("update")(releases.device_update)


def package_version() -> str:
    try:
        return version("mqtt-fleet")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def _show_version(value: bool) -> None:
    if value:
        print(f"fleet (mqtt-fleet) {package_version()}")
        raise typer.Exit()


@app.callback()
def root(
    _version: Optional[bool] = typer.Option(None, "--version", callback=_show_version, is_eager=True,
                                            help="print the version and exit"),
) -> None:
    """Command a fleet of PCs over MQTT."""


def main() -> None:
    """The `fleet` entry point."""
    command = typer.main.get_command(app)
    plain_metavars(command)
    command()
