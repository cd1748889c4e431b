"""`fleet account …`: social-media accounts and the devices whose browsers hold them."""

from __future__ import annotations

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
