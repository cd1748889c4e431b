"""Housekeeping commands (docs/architecture.md#housekeeping): `fleet task cancel` by filter,
`fleet device delete|restore`, `fleet prune`."""

from __future__ import annotations

from typing import Any, Optional

import typer

from cli.output import console, fail, print_task
from cli.rest import api
from schemas.housekeeping import CANCELABLE_STATUSES


def task_cancel(
    task_id: Optional[str] = typer.Argument(None, help="one task; or leave it out and name tasks with the filters"),
    device: Optional[str] = typer.Option(None, "--device", help="every unfinished task of this device"),
    account: Optional[str] = typer.Option(None, "--account", help="… acting for this account"),
    broadcast_id: Optional[str] = typer.Option(None, "--broadcast", help="… the runs of this broadcast"),
    job_id: Optional[str] = typer.Option(None, "--job", help="… the runs of this job (`fleet job cancel` also stops it)"),
    task_type: Optional[str] = typer.Option(None, "--type", help="… of this task type"),
    status: list[str] = typer.Option([], "--status", help=f"only these statuses ({', '.join(CANCELABLE_STATUSES)}); "
                                     "repeatable"),
    dry_run: bool = typer.Option(False, "--dry-run", help="list what would be canceled, cancel nothing"),
) -> None:
    """Cancel a task, or every unfinished task the filters name (they narrow each other): a task
    not started never runs; a running one is told to stop."""
    filters = {"device_id": device, "account": account, "broadcast_id": broadcast_id, "job_id": job_id,
               "type": task_type}
    given = {key: value for key, value in filters.items() if value is not None}
    if task_id is not None:
        if given or status or dry_run:
            fail("give either a task id or filters (--device, --account, --broadcast, --job, --type), not both", code=2)
        print_task(api("POST", f"/api/v1/tasks/{task_id}/cancel"))
        return
    if not given:
        fail("name the tasks: a task id, or at least one of --device, --account, --broadcast, --job, --type", code=2)
    body: dict[str, Any] = {**given, "dry_run": dry_run}
    if status:
        body["status"] = status
    result = api("POST", "/api/v1/tasks/cancel", json=body)
    verb = "would cancel" if result["dry_run"] else "canceled"
    console.print(f"{verb} {result['count']} task(s)" + (f" ({result['skipped']} had ended)" if result["skipped"] else ""))
    for listed in result["task_ids"]:
        print(listed)
    if result["truncated"]:
        console.print(f"… only the first {len(result['task_ids'])} are listed")


def device_delete(
    device_id: str = typer.Argument(..., help="the device to delete"),
    purge: bool = typer.Option(False, "--purge", help="also delete its tasks, events and presence history "
                               "(default: kept and queryable)"),
) -> None:
    """Delete a device: its tasks canceled, its broker login revoked, its retained status cleared,
    its accounts removed; a birth of that id is ignored until `fleet device restore`."""
    result = api("DELETE", f"/api/v1/devices/{device_id}", params={"history": "purge" if purge else "keep"})
    console.print(f"device {result['id']} deleted (history {result['history']}): {result['tasks_canceled']} task(s) "
                  f"canceled, login {'revoked' if result['identity_revoked'] else 'none on the broker'}", highlight=False)
    if result["broker_files"]:
        console.print(f"broker files: {result['broker_files']}", highlight=False)
    if result["accounts_removed"]:
        console.print("accounts removed (add them on another device and log in again): "
                      + ", ".join(result["accounts_removed"]), highlight=False)
    if purge:
        console.print(f"purged {result['tasks_purged']} task(s), {result['connections_purged']} presence row(s)")


def device_restore(device_id: str = typer.Argument(..., help="a deleted device")) -> None:
    """Admit a deleted device again: its next birth is recorded (it needs a login: `fleet device add`)."""
    api("POST", f"/api/v1/devices/{device_id}/restore")
    console.print(f"device {device_id} restored")


def prune(dry_run: bool = typer.Option(False, "--dry-run", help="count what would be deleted, delete nothing")) -> None:
    """Delete history past its retention (FLEET_RETENTION_*) now, as the scheduled prune does."""
    result = api("POST", "/api/v1/prune", json={"dry_run": dry_run}, timeout=300)
    verb = "would delete" if result["dry_run"] else "deleted"
    for kind, rows in result["deleted"].items():
        console.print(f"{verb} {rows} {kind}", highlight=False)
    for kind in result["kept_for_ever"]:
        console.print(f"kept for ever: {kind}", highlight=False)
