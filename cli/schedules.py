"""`fleet schedule …` (create, list, show, pause, resume, delete) and `fleet pacing …` (set,
list, delete): recurring tasks and broadcasts, and the least interval between an account's
tasks of a type (docs/architecture.md#schedules)."""

from __future__ import annotations

import json
from typing import Any, Optional

import typer
from rich.table import Table

from cli.output import console
from cli.rest import api
from cli.tasks import parse_params

app = typer.Typer(help="Recurring tasks and broadcasts: cron times in a time zone.", no_args_is_help=True)
pacing_app = typer.Typer(help="Space out an account's tasks of a type (e.g. chats 30-120 s apart).",
                         no_args_is_help=True)


def _action(
    task_type: Optional[str], broadcast_type: Optional[str], device: Optional[str], group: Optional[str],
    include_offline: bool, options: dict[str, Any], action_json: Optional[str],
) -> dict[str, Any]:
    """The schedule's action from the flags: exactly one of --task, --broadcast or --action."""
    if sum(x is not None for x in (task_type, broadcast_type, action_json)) != 1:
        raise typer.BadParameter("give exactly one of --task TYPE (with --device or --account), --broadcast TYPE, "
                                 "or --action JSON")
    if action_json is not None:
        try:
            loaded = json.loads(action_json)
        except json.JSONDecodeError as exc:
            raise typer.BadParameter(f"--action is not valid JSON ({exc.msg}); e.g. "
                                     '--action \'{"task": {"device_id": "pc-01", "type": "ping"}}\'')
        if not isinstance(loaded, dict):
            raise typer.BadParameter('--action must be a JSON object: {"task": {...}} or {"broadcast": {...}}')
        return loaded
    body = {k: v for k, v in options.items() if v not in (None, {})}
    if task_type is not None:
        if device is None and options.get("account") is None:
            raise typer.BadParameter("--task needs --device ID, or --account NAME bound to a device")
        return {"task": {"type": task_type, **({"device_id": device} if device else {}), **body}}
    extra = {"group": group} if group else {}
    return {"broadcast": {"type": broadcast_type, "include_offline": include_offline, **extra, **body}}


def _print(schedule: dict[str, Any]) -> None:
    state = "[green]enabled[/green]" if schedule["enabled"] else "[yellow]paused[/yellow]"
    console.print(f"[bold]{schedule['name']}[/bold] ({schedule['id']}) {state}: {schedule['cron']!r} in "
                  f"{schedule['timezone']}", highlight=False)
    console.print(f"  action: {json.dumps(schedule['action'], separators=(',', ':'))}", highlight=False)
    for label, key in (("last slot", "last_run_at"), ("fired at", "last_fired_at"), ("created", "last_result"),
                       ("last error", "last_error"), ("last skip", "last_skip")):
        if schedule.get(key):
            console.print(f"  {label}: {schedule[key]}", highlight=False)
    if schedule.get("skipped"):
        console.print(f"  missed slots skipped in all: {schedule['skipped']}", highlight=False)
    for moment in schedule.get("upcoming") or []:
        console.print(f"  next: {moment}", highlight=False)


@app.command("create")
def schedule_create(
    name: str = typer.Argument(..., help="a unique name (letters, digits, . _ -)"),
    cron: str = typer.Option(..., help="5 fields (e.g. '0 9 * * 1-5': 09:00 on weekdays) or 6 with the seconds last"),
    tz: str = typer.Option(..., "--tz", help="IANA time zone the cron times are read in, e.g. Asia/Shanghai"),
    task_type: Optional[str] = typer.Option(None, "--task", metavar="TYPE", help="create this task each time"),
    broadcast_type: Optional[str] = typer.Option(None, "--broadcast", metavar="TYPE", help="broadcast this task"),
    device: Optional[str] = typer.Option(None, help="the task's device (--task)"),
    account: Optional[str] = typer.Option(None, help="the account the task acts for"),
    group: Optional[str] = typer.Option(None, help="only devices of this group (--broadcast)"),
    include_offline: bool = typer.Option(False, "--include-offline", help="offline devices run it when back (--broadcast)"),
    param: list[str] = typer.Option([], "--param", "-p", help="a parameter as key=value; repeatable"),
    params_json: Optional[str] = typer.Option(None, "--params", help="all parameters as one JSON object"),
    ttl: Optional[float] = typer.Option(None, help="seconds from each fire time before an unstarted task expires"),
    timeout: Optional[float] = typer.Option(None, help="seconds the task may run"),
    action_json: Optional[str] = typer.Option(None, "--action", metavar="JSON",
                                              help='the whole action: {"task": {...}} or {"broadcast": {...}}'),
    paused: bool = typer.Option(False, "--paused", help="create it paused"),
) -> None:
    """Create a schedule: at each cron time the controller creates the task or broadcast."""
    options = {"account": account, "params": parse_params(param, params_json), "ttl": ttl, "timeout": timeout}
    action = _action(task_type, broadcast_type, device, group, include_offline, options, action_json)
    body = {"name": name, "cron": cron, "timezone": tz, "action": action, "enabled": not paused}
    _print(api("POST", "/api/v1/schedules", json=body))


@app.command("list")
def schedule_list() -> None:
    """List schedules."""
    table = Table("name", "id", "cron", "time zone", "state", "next", "last result", "skipped")
    for item in api("GET", "/api/v1/schedules")["items"]:
        table.add_row(item["name"], item["id"], item["cron"], item["timezone"],
                      "enabled" if item["enabled"] else "paused", item["next_run_at"] or "-",
                      item["last_error"] or item["last_result"] or "-", str(item["skipped"]))
    console.print(table)


@app.command("show")
def schedule_show(key: str = typer.Argument(..., help="the schedule's name or id")) -> None:
    """Show a schedule, what it did last and its next 5 fire times."""
    _print(api("GET", f"/api/v1/schedules/{key}"))


@app.command("pause")
def schedule_pause(key: str = typer.Argument(..., help="the schedule's name or id")) -> None:
    """Pause a schedule: nothing fires until it is resumed."""
    _print(api("POST", f"/api/v1/schedules/{key}/pause"))


@app.command("resume")
def schedule_resume(key: str = typer.Argument(..., help="the schedule's name or id")) -> None:
    """Resume a schedule from its next fire time (times passed while paused do not fire)."""
    _print(api("POST", f"/api/v1/schedules/{key}/resume"))


@app.command("delete")
def schedule_delete(key: str = typer.Argument(..., help="the schedule's name or id")) -> None:
    """Delete a schedule (what it created stays)."""
    api("DELETE", f"/api/v1/schedules/{key}")
    console.print(f"schedule {key} deleted", highlight=False)


@pacing_app.command("set")
def pacing_set(
    account: str = typer.Argument(..., help="the account, or '*' for every account without its own rule"),
    task_type: str = typer.Argument(..., help="the task type, e.g. chat"),
    interval: float = typer.Option(..., help="least seconds between two tasks of the account and type"),
    jitter: float = typer.Option(0.0, help="up to this many seconds more, at random"),
) -> None:
    """Set a pacing rule: tasks created from now on get a run_at spaced by interval + jitter."""
    rule = api("PUT", "/api/v1/pacing", json={"account": account, "type": task_type, "interval": interval,
                                              "jitter": jitter})
    console.print(f"{rule['type']} tasks of {rule['account']}: at least {rule['interval']:g} s apart "
                  f"(+ up to {rule['jitter']:g} s)", highlight=False)


@pacing_app.command("list")
def pacing_list() -> None:
    """List pacing rules."""
    table = Table("account", "type", "interval", "jitter", "latest run_at")
    for rule in api("GET", "/api/v1/pacing")["items"]:
        table.add_row(rule["account"], rule["type"], f"{rule['interval']:g}", f"{rule['jitter']:g}",
                      rule["last_run_at"] or "-")
    console.print(table)


@pacing_app.command("delete")
def pacing_delete(account: str, task_type: str) -> None:
    """Remove a pacing rule (tasks already paced keep their run_at)."""
    api("DELETE", "/api/v1/pacing", params={"account": account, "type": task_type})
    console.print(f"pacing rule of {account} / {task_type} removed", highlight=False)
