"""`fleet device` (run the daemon; `add`/`revoke` provision it on the broker) and
`fleet devices` (list them with their presence)."""

from __future__ import annotations

from typing import Optional

import typer
from rich.table import Table

from cli.entry import run_daemon
from cli.fleet_config import device_groups
from cli.housekeeping import device_delete, device_restore
from cli.identities import provision
from cli.output import console, load_cell
from cli.rest import api
from cli.service.commands import install_service, uninstall_service
from cli.targets import TAGS_HELP, tag_device

app = typer.Typer(help="Run the device daemon (no sub-command), or provision devices on the broker.")


@app.callback(invoke_without_command=True)
def device(
    ctx: typer.Context,
    device_id: Optional[str] = typer.Option(None, "--id", help="device id (default: generated once and kept)"),
    name: Optional[str] = typer.Option(None, help="display name (default: host name)"),
    config: Optional[str] = typer.Option(None, "--config", help="TOML settings file (as FLEET_CONFIG)"),
    managed: bool = typer.Option(False, "--managed", help="run it under the launcher, which restarts it into a new "
                                 "version after a remote update (what an OS service should run)"),
) -> None:
    """Run the device daemon: connect to the broker, announce presence, execute tasks."""
    if ctx.invoked_subcommand is None:
        run_daemon(device_id, name, config, managed)  # `fleet device` alone does not get here: see cli/entry.py


@app.command("add")
def device_add(
    device_id: str = typer.Argument(..., help="the device id, which is also its MQTT user name"),
    group: list[str] = typer.Option([], "--group", "-g", help="a group it belongs to; repeatable"),
) -> None:
    """Provision a device: a random MQTT password (only its hash is kept) and its topic ACL."""
    provision(device_id, "device", group)


app.command("groups")(device_groups)
app.command("tag")(tag_device)
app.command("install-service")(install_service)
app.command("uninstall-service")(uninstall_service)
app.command("delete")(device_delete)
app.command("restore")(device_restore)


@app.command("revoke")
def device_revoke(device_id: str) -> None:
    """Revoke a device: the broker refuses it from its next connection (no restart needed)."""
    revoked = api("DELETE", f"/api/v1/identities/{device_id}")
    console.print(f"{revoked['role']} {revoked['name']} revoked")


def list_devices(
    status: Optional[str] = typer.Option(None, help="online or offline"),
    group: Optional[str] = typer.Option(None, help="only devices in this group"),
    tags: Optional[str] = typer.Option(None, "--tags", "-t", help=TAGS_HELP),
    ids: bool = typer.Option(False, "--ids", help="print only the ids, one a line (for scripts: DEVICE=$(fleet devices --ids | head -1))"),
) -> None:
    """List devices with their presence."""
    query = {k: v for k, v in {"status": status, "group": group, "tags": tags, "limit": 500}.items() if v is not None}
    page = api("GET", "/api/v1/devices", params=query)
    if ids:
        for item in page["items"]:
            print(item["id"])
        return
    table = Table("id", "name", "status", "last seen", "load", "task types", "groups", "tags")
    alerts = []
    for item in page["items"]:
        facts = item.get("facts") or {}
        colour = "green" if item["status"] == "online" else "red"
        table.add_row(
            item["id"], item.get("name") or "", f"[{colour}]{item['status']}[/{colour}]", str(item.get("last_seen") or ""),
            load_cell(item.get("metrics")), ",".join(facts.get("task_types", [])), ",".join(item.get("groups", [])),
            " ".join(f"{key}={value}" for key, value in (item.get("tags") or {}).items()),
        )
        if item.get("presence_alert"):
            alerts.append(f"[yellow]{item['id']}[/yellow]: {item['presence_alert']}")
    console.print(table)
    for alert in alerts:
        console.print(alert, highlight=False)
    console.print(f"{page['total']} device(s)")
