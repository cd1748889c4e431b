"""Printing for the `fleet` command: the consoles, errors, and a task with its timeline."""

from __future__ import annotations

from typing import Any, NoReturn

import typer
from rich.console import Console

console = Console()
err_console = Console(stderr=True)


def fail(message: str, code: int = 2) -> NoReturn:
    """One red error line on stderr, then exit (2: bad settings or start-up; 1: a refused request)."""
    err_console.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def short(value: Any) -> Any:
    """Long strings (a base64 screenshot) are shown by their size only."""
    return f"<{len(value)} characters>" if isinstance(value, str) and len(value) > 300 else value


def event_line(event: dict[str, Any]) -> str:
    """One timeline entry: time, attempt, event, progress and message."""
    extra = event.get("message") or ""
    if event.get("progress") is not None:
        extra = f"{event['progress']}% {extra}"
    if not event.get("applied", True):
        extra = f"(late, not applied) {extra}"
    return f"  {event['at']}  #{event.get('attempt', 1)} {event['event']:<10} {extra}".rstrip()


def print_task(task: dict[str, Any]) -> None:
    attempt = f" (attempt {task['attempt']})" if task.get("attempt", 1) > 1 else ""
    console.print(
        f"[bold]{task['id']}[/bold]  {task['type']} on {task['device_id']}: [cyan]{task['status']}[/cyan]{attempt}"
    )
    for event in task.get("events", []):
        console.print(event_line(event), highlight=False)
    if task.get("retry_at"):
        console.print(f"  next attempt at {task['retry_at']}", highlight=False)
    if task.get("run_at") and task.get("status") == "queued":
        console.print(f"  not published before {task['run_at']}", highlight=False)
    details = task.get("details") or {}
    if details.get("waiting_for"):
        console.print(f"  waiting for: {details['waiting_for']}", highlight=False)
    if details.get("scan_url"):
        console.print(f"  scan the QR code (or open this link): {details['scan_url']}", highlight=False)
    if task.get("result") is not None:
        console.print_json(data={k: short(v) for k, v in task["result"].items()})
    if task.get("error"):
        console.print(f"  [red]{task['error']['code']}[/red]: {task['error']['message']}", highlight=False)


def load_cell(metrics: dict[str, Any] | None) -> str:
    """A device's latest heartbeat metrics in one cell: CPU, memory and free disk."""
    if not metrics:
        return ""
    return (f"cpu {metrics['cpu_percent']:.0f}% mem {metrics['memory_percent']:.0f}% "
            f"disk {metrics['disk_free_bytes'] / 1e9:.1f} GB free")


def plain_metavars(command: Any) -> None:
    """Help shows a flag without a type and a value option by its name (PORT, TEXT…), not
    typer's `<bool>`, `<list[str]>` labels."""
    for param in [*command.params, command.get_help_option(typer.Context(command))]:
        if param is None or param.metavar is not None:
            continue
        param.metavar = "" if getattr(param, "is_flag", False) else param.name.upper()
    for sub in getattr(command, "commands", {}).values():
        plain_metavars(sub)
