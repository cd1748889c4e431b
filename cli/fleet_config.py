"""`fleet config set/show/drift` (desired fleet config, per level, and what devices reported) and
`fleet device groups` (a device's group membership), through the REST API
(docs/architecture.md#groups-and-fleet-config)."""

from __future__ import annotations

import json
from typing import Any, Optional

import typer
from rich.table import Table

from cli.output import console, fail
from cli.rest import api

app = typer.Typer(help="Desired fleet config (global, per group, per device) and its drift.", no_args_is_help=True)


def _level_path(group: str | None, device: str | None) -> tuple[str, str, str]:
    """(PUT path, scope, name) of the level the options name."""
    if group and device:
        fail("give --group or --device, not both")
    if group:
        return f"/api/v1/groups/{group}/config", "group", group
    if device:
        return f"/api/v1/devices/{device}/config", "device", device
    return "/api/v1/config", "global", ""


def _value(text: str) -> Any:
    """A JSON value (30, true, "x"), or the text itself (DEBUG)."""
    try:
        return json.loads(text)
    except ValueError:
        return text


@app.command("set", context_settings={"allow_extra_args": True})
def config_set(
    ctx: typer.Context,
    group: Optional[str] = typer.Option(None, "--group", "-g", help="set it for this group's members"),
    device: Optional[str] = typer.Option(None, "--device", "-d", help="set it for this device only"),
    unset: list[str] = typer.Option([], "--unset", help="remove a setting from this level; repeatable"),
) -> None:
    """Change one level's desired settings: `fleet config set [--group G | --device ID] NAME=VALUE …`
    (global unless --group/--device), e.g. heartbeat_interval=10 log_level=DEBUG. Devices get it
    at once, or on their next connection (it is retained)."""
    values: list[str] = list(ctx.args)
    path, scope, name = _level_path(group, device)
    current: dict[str, Any] = next((level["settings"] for level in api("GET", "/api/v1/config")
                    if level["scope"] == scope and level["name"] == name), {})
    for item in values or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            fail(f"{item!r}: write NAME=VALUE, e.g. heartbeat_interval=10")
        current[key] = _value(raw)
    for key in unset:
        current.pop(key, None)
    level = api("PUT", path, json={"settings": current})
    shown = ", ".join(f"{k}={v}" for k, v in sorted(level["settings"].items())) or "nothing"
    console.print(f"{scope}{' ' + name if name else ''} config: {shown}", highlight=False)


@app.command("show")
def config_show(device: Optional[str] = typer.Argument(None, help="a device: its merged config, report and drift")) -> None:
    """Every level's settings, or one device's desired config against what it reported."""
    if device is None:
        table = Table("level", "settings", "updated")
        for level in api("GET", "/api/v1/config"):
            label = level["scope"] + (f" {level['name']}" if level["name"] else "")
            table.add_row(label, json.dumps(level["settings"]), str(level.get("updated_at") or ""))
        console.print(table)
        return
    view = api("GET", f"/api/v1/devices/{device}/config")
    reported = view.get("reported") or {}
    table = Table("setting", "desired", "from", "reported")
    for key, value in sorted(view["desired"].items()):
        table.add_row(key, json.dumps(value), view["sources"][key], json.dumps((reported.get("applied") or {}).get(key)))
    table.add_row("groups", ",".join(view["groups"]), "membership", ",".join(reported.get("groups") or []))
    console.print(table)
    console.print(f"revision {view['revision']}, reported {reported.get('revision', 'never')}")
    _print_drift([view])


@app.command("drift")
def config_drift() -> None:
    """Devices whose reported config differs from the desired one, and why."""
    views = api("GET", "/api/v1/config/drift")
    _print_drift(views)
    if not views:
        console.print("no drift: every device reported its desired config")


def _print_drift(views: list[dict[str, Any]]) -> None:
    for view in views:
        for item in view["drift"]:
            console.print(f"[yellow]{view['device_id']}[/yellow] {item['setting']}: desired "
                          f"{json.dumps(item.get('desired'))}, reported {json.dumps(item.get('reported'))} "
                          f"({item['reason']})", highlight=False)


def device_groups(
    device_id: str = typer.Argument(..., help="the device id"),
    set_: Optional[str] = typer.Option(None, "--set", help="its groups, comma-separated (an empty string: none)"),
    add: list[str] = typer.Option([], "--add", help="add it to a group; repeatable"),
    remove: list[str] = typer.Option([], "--remove", help="remove it from a group; repeatable"),
) -> None:
    """Show or change a device's groups; its broker ACL and the device itself follow at once."""
    if set_ is not None and (add or remove):
        fail("give --set, or --add/--remove, not both")
    path = f"/api/v1/devices/{device_id}/groups"
    if set_ is not None:
        shown = api("PUT", path, json={"groups": [g.strip() for g in set_.split(",") if g.strip()]})
    else:
        shown = api("GET", path)
        for group in add:
            shown = api("POST", f"{path}/{group}")
        for group in remove:
            shown = api("DELETE", f"{path}/{group}")
    console.print(f"{device_id}: groups {','.join(shown['groups']) or 'none'}", highlight=False)
    if shown["declared_not_accepted"]:
        console.print(f"declared by the device but not members (not counted): {','.join(shown['declared_not_accepted'])}",
                      highlight=False)
    if shown.get("broker"):
        console.print(f"broker: {shown['broker']}", highlight=False)
