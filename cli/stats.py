"""`fleet stats`: task statistics over a time window (`GET /api/v1/stats`) as tables."""

from __future__ import annotations

from typing import Any, Optional

import typer
from rich.table import Table

from cli.output import console
from cli.rest import api

GROUPS = (("per_platform", "platform"), ("per_type", "type"), ("per_device", "device"), ("per_account", "account"))


def _percent(rate: float | None) -> str:
    return "-" if rate is None else f"{rate * 100:.1f}%"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def _group_table(title: str, rows: list[dict[str, Any]], top: int) -> Table:
    table = Table(title, "tasks", "finished", "succeeded", "success rate", "median run time", title_justify="left")
    for row in rows[:top]:
        table.add_row(row["key"], str(row["total"]), str(row["finished"]), str(row["succeeded"]),
                      _percent(row["success_rate"]), _seconds(row["median_seconds"]))
    return table


def stats(
    window: Optional[str] = typer.Option(None, help="1h, 24h or 7d (default 24h)"),
    since: Optional[str] = typer.Option(None, help="ISO 8601 start instead of --window, e.g. 2026-11-30T08:00:00Z"),
    until: Optional[str] = typer.Option(None, help="ISO 8601 end (default now)"),
    device: Optional[str] = typer.Option(None, help="only this device's tasks"),
    account: Optional[str] = typer.Option(None, help="only this account's tasks"),
    platform: Optional[str] = typer.Option(None, help="only tasks on this platform"),
    type_: Optional[str] = typer.Option(None, "--type", help="only tasks of this type"),
    top: int = typer.Option(20, min=1, help="rows per table at most"),
    as_json: bool = typer.Option(False, "--json", help="print the API's JSON answer"),
) -> None:
    """Tasks by state and type, and success rate and median run time per platform, type,
    device and account, over a time window (counted by the controller's database)."""
    query = {"window": window, "since": since, "until": until, "device_id": device, "account": account,
             "platform": platform, "type": type_}
    found = api("GET", "/api/v1/stats", params={k: v for k, v in query.items() if v is not None})
    if as_json:
        console.print_json(data=found)
        return
    console.print(f"tasks created from {found['since']} to {found['until']}: {found['total']}, finished "
                  f"{found['finished']}, succeeded {found['succeeded']} ({_percent(found['success_rate'])})",
                  highlight=False)
    states = Table("status", "tasks", title_justify="left")
    for status, count in found["by_state"].items():
        states.add_row(status, str(count))
    console.print(states)
    for key, title in GROUPS:
        if found[key]:
            console.print(_group_table(title, found[key], top))
            if len(found[key]) > top:
                console.print(f"  … {len(found[key]) - top} more {title}s (--top)", highlight=False)
