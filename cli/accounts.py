"""`fleet account …`: social-media accounts and the devices whose browsers hold them."""

from __future__ import annotations

from urllib.parse import quote

import typer
from rich.table import Table

from cli.output import console
from cli.rest import api

app = typer.Typer(help="Social-media accounts and the devices they are bound to.", no_args_is_help=True)


@app.command("add")
def account_add(
    name: str = typer.Argument(..., help="the account name tasks use"),
    platform: str = typer.Option(..., help="e.g. reference, douyin"),
    device: str = typer.Option(..., help="the device whose browser holds this account"),
) -> None:
    """Bind an account to a device; tasks may then name just the account."""
    account = api("POST", "/api/v1/accounts", json={"name": name, "platform": platform, "device_id": device})
    console.print(f"account [bold]{account['name']}[/bold] ({account['platform']}) on {account['device_id']}")


@app.command("list")
def account_list() -> None:
    """List accounts with their devices and login status."""
    table = Table("account", "platform", "device", "login status", "last login")
    for item in api("GET", "/api/v1/accounts"):
        table.add_row(item["name"], item["platform"], item["device_id"], item["login_status"],
                      str(item["last_login_at"] or ""))
    console.print(table)


@app.command("move")
def account_move(
    name: str = typer.Argument(..., help="the account to move"),
    to: str = typer.Option(..., "--to", help="the device the account moves to"),
    wait: float = typer.Option(20.0, help="seconds to wait for a fresh backup on the old device (0: use the last one)"),
) -> None:
    """Move an account to another device with its login: a fresh session backup on the old
    device when it is online, then the new device restores the latest backup."""
    moved = api("POST", f"/api/v1/accounts/{quote(name, safe='')}/move", json={"device_id": to, "backup_wait": wait},
                timeout=wait + 30)
    console.print(moved["message"])
    if moved["restore_task_id"]:
        console.print(f"follow it with: fleet task show {moved['restore_task_id']}")


@app.command("backup")
def account_backup(
    name: str = typer.Argument(..., help="the account"),
    show: bool = typer.Option(False, "--show", help="only show the latest backup's metadata"),
) -> None:
    """Back up the account's browser session on its device (sealed with the device's vault key),
    or with --show see the latest backup (metadata only: the controller cannot read it)."""
    path = f"/api/v1/accounts/{quote(name, safe='')}/backup"
    if show:
        console.print_json(data=api("GET", path))
        return
    task = api("POST", path)
    console.print(f"task {task['id']} backs up account {name} on {task['device_id']}; follow it with: "
                  f"fleet task show {task['id']}")
