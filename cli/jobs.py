"""`fleet job …` (create, list, show, runs, cancel, pause, resume): one task over a target of
devices, with a rollout and abort rules (docs/architecture.md#jobs)."""

from __future__ import annotations

import json
import re
from typing import Any, Optional

import typer
from rich.table import Table

from cli.output import console
from cli.rest import api, new_idempotency_key
from cli.tasks import KEY_HELP, parse_params

app = typer.Typer(help="Run one task over many devices: rollouts, abort rules, continuous jobs.", no_args_is_help=True)


def parse_rate(rate: str) -> float:
    """`--rate 60/min`, `10/s`, `600/h` or a bare number (per minute) → runs per minute."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(?:/\s*(s|sec|m|min|h|hour))?\s*", rate)
    if match is None or float(match.group(1)) <= 0:
        raise typer.BadParameter(f"--rate {rate!r} is not a rate: give runs per minute, e.g. --rate 60/min, 2/s or 600/h")
    per = {"s": 60.0, "sec": 60.0, "h": 1 / 60, "hour": 1 / 60}.get(match.group(2) or "min", 1.0)
    return float(match.group(1)) * per


def parse_threshold(value: str, flag: str) -> dict[str, Any]:
    """`20%` → a percent threshold, `3` → a count."""
    text = value.strip()
    try:
        if text.endswith("%"):
            percent = float(text[:-1])
            if not 0 < percent <= 100:
                raise ValueError
            return {"percent": percent}
        count = int(text)
        if count < 1:
            raise ValueError
        return {"count": count}
    except ValueError:
        raise typer.BadParameter(f"{flag} {value!r} must be a count (e.g. 3) or a share of the ended runs (e.g. 20%)")


def _target(tags: Optional[str], group: list[str], device: list[str], account: list[str], everyone: bool) -> dict[str, Any]:
    target: dict[str, Any] = {}
    if tags:
        target["tags"] = tags
    if group:
        target["groups"] = group
    if device:
        target["device_ids"] = device
    if account:
        target["accounts"] = account
    if everyone:
        target["all"] = True
    if not target:
        raise typer.BadParameter("name the devices: --target-tags EXPR, --group, --device, --account or --all")
    return target


def _rollout(rate: Optional[str], batch: Optional[int], pause: float, wait: bool,
             exponential: Optional[str]) -> dict[str, Any] | None:
    given = [name for name, value in (("--rate", rate), ("--batch", batch), ("--exponential", exponential))
             if value is not None]
    if len(given) > 1 and not (given == ["--rate", "--exponential"]):
        raise typer.BadParameter(f"give one rollout: {' or '.join(given)} (--rate caps --exponential)")
    if exponential is not None:
        parts = exponential.split(",")
        try:
            start, factor = float(parts[0]), float(parts[1])
            assert len(parts) == 2
        except (ValueError, IndexError, AssertionError):
            raise typer.BadParameter(f"--exponential {exponential!r} must be START,FACTOR: runs per minute to start "
                                     "with and what the rate is multiplied by each step, e.g. 6,2")
        body: dict[str, Any] = {"kind": "exponential", "start_per_minute": start, "factor": factor}
        if rate is not None:
            body["max_per_minute"] = parse_rate(rate)
        return body
    if rate is not None:
        return {"kind": "rate", "per_minute": parse_rate(rate)}
    if batch is not None:
        return {"kind": "batches", "size": batch, "pause": pause, "wait": wait}
    return None


@app.command("create")
def job_create(
    task_type: str = typer.Argument(..., help="task type every run runs, e.g. ping, echo, login"),
    tags: Optional[str] = typer.Option(None, "--target-tags", metavar="EXPR",
                                       help="a tag expression, e.g. 'platform=douyin and region in (sh, bj)'"),
    group: list[str] = typer.Option([], "--group", help="devices in this group; repeatable"),
    device: list[str] = typer.Option([], "--device", help="this device; repeatable"),
    account: list[str] = typer.Option([], "--account", help="the device holding this account, one run per account; "
                                      "repeatable"),
    everyone: bool = typer.Option(False, "--all", help="every device"),
    param: list[str] = typer.Option([], "--param", "-p", help="a parameter as key=value (value may be JSON); repeatable"),
    params_json: Optional[str] = typer.Option(None, "--params", help="all parameters as one JSON object"),
    rate: Optional[str] = typer.Option(None, help="at most this many runs per minute, e.g. 60/min or 1/s"),
    batch: Optional[int] = typer.Option(None, min=1, help="runs per batch"),
    pause: float = typer.Option(0.0, min=0, help="seconds between batches (with --batch)"),
    wait: bool = typer.Option(False, "--wait", help="count --pause from the end of a batch's last run"),
    exponential: Optional[str] = typer.Option(None, metavar="START,FACTOR",
                                              help="a rate that starts at START/min and grows by FACTOR (capped by --rate)"),
    abort_failed: Optional[str] = typer.Option(None, metavar="N|P%", help="abort when this many (or this share) of the "
                                               "ended runs failed or timed out"),
    min_runs: int = typer.Option(1, min=1, help="ended runs before --abort-failed is looked at"),
    continuous: bool = typer.Option(False, "--continuous", help="also run on devices that match the target later"),
    run_at: Optional[str] = typer.Option(None, help="start at this time (ISO 8601 with a zone, e.g. 2026-05-01T09:00+08:00)"),
    ttl: Optional[float] = typer.Option(None, help="seconds a run may wait to start"),
    timeout: Optional[float] = typer.Option(None, help="seconds a run may take"),
    retries: Optional[int] = typer.Option(None, min=0, help="times a failed or timed-out run is run again"),
    name: Optional[str] = typer.Option(None, help="a label for people"),
    dry_run: bool = typer.Option(False, "--dry-run", help="list the devices the target selects now; create nothing"),
    as_json: bool = typer.Option(False, "--json", help="print the created job as JSON"),
    idempotency_key: Optional[str] = typer.Option(None, "--idempotency-key", metavar="KEY", help=KEY_HELP),
) -> None:
    """Create a job: one task over a target, as fast as its rollout allows."""
    target = _target(tags, group, device, account, everyone)
    if dry_run:
        preview = api("POST", "/api/v1/targets/preview", json=target)
        for device_id in preview["device_ids"]:
            print(device_id)
        more = " (list truncated)" if preview.get("truncated") else ""
        console.print(f"{preview['count']} device(s), {preview['online']} online{more}", highlight=False)
        return
    body: dict[str, Any] = {"type": task_type, "target": target, "params": parse_params(param, params_json),
                            "mode": "continuous" if continuous else "snapshot"}
    plan = _rollout(rate, batch, pause, wait, exponential)
    if plan is not None:
        body["rollout"] = plan
    if abort_failed is not None:
        body["abort"] = [{"on": "failed_or_timed_out", "min_runs": min_runs, **parse_threshold(abort_failed, "--abort-failed")}]
    options = {"run_at": run_at, "ttl": ttl, "timeout": timeout, "retries": retries, "name": name}
    body |= {k: v for k, v in options.items() if v is not None}
    job = api("POST", "/api/v1/jobs", json=body, idempotency_key=idempotency_key or new_idempotency_key())
    if as_json:
        print(json.dumps(job))
        return
    console.print(f"job [bold]{job['id']}[/bold] {job['status']}; follow it with: fleet job show {job['id']}",
                  highlight=False)


@app.command("list")
def job_list(
    status: Optional[str] = typer.Option(None, help="only jobs in this status, e.g. running"),
    limit: int = typer.Option(50, min=1, max=500),
) -> None:
    """List jobs, newest first."""
    query = {k: v for k, v in {"status": status, "limit": limit}.items() if v is not None}
    page = api("GET", "/api/v1/jobs", params=query)
    table = Table("id", "name", "type", "mode", "status", "created")
    for item in page["items"]:
        table.add_row(item["id"], item["name"] or "", item["type"], item["mode"], item["status"], item["created_at"])
    console.print(table)


def print_job(job: dict[str, Any]) -> None:
    console.print(f"job [bold]{job['id']}[/bold] {job['name'] or ''}", highlight=False)
    rows = [("type", job["type"]), ("status", job["status"]), ("mode", job["mode"]),
            ("target", json.dumps(job["target"])), ("rollout", json.dumps(job["rollout"]) if job["rollout"] else "all at once"),
            ("abort", json.dumps(job["abort"]) if job["abort"] else "never"), ("created", job["created_at"]),
            ("started", job["started_at"] or "-"), ("finished", job["finished_at"] or "-"),
            ("next run", job["next_run_at"] or "-")]
    if job["abort_reason"]:
        rows.append(("abort reason", job["abort_reason"]))
    progress = job.get("progress")
    if progress:
        rate = "-" if progress["success_rate"] is None else f"{100 * progress['success_rate']:.0f} %"
        rows += [("runs", f"{progress['runs']} of {progress['targets']} target(s), {progress['pending_targets']} pending"),
                 ("by status", ", ".join(f"{k} {v}" for k, v in sorted(progress["by_status"].items())) or "-"),
                 ("success rate", f"{rate} of {progress['ended']} ended")]
    for key, value in rows:
        console.print(f"  {key:<13} {value}", highlight=False, soft_wrap=True)


@app.command("show")
def job_show(job_id: str) -> None:
    """Show a job: its definition and progress (runs by status, pending targets, success rate)."""
    print_job(api("GET", f"/api/v1/jobs/{job_id}"))


@app.command("runs")
def job_runs(
    job_id: str,
    status: Optional[str] = typer.Option(None, help="only runs in this status"),
    limit: int = typer.Option(100, min=1, max=500),
) -> None:
    """List a job's runs (tasks), in the order they were created."""
    query = {k: v for k, v in {"status": status, "limit": limit}.items() if v is not None}
    page = api("GET", f"/api/v1/jobs/{job_id}/runs", params=query)
    table = Table("id", "device", "account", "status", "created")
    for item in page["items"]:
        table.add_row(item["id"], item["device_id"], item["account"] or "", item["status"], item["created_at"])
    console.print(table)


@app.command("cancel")
def job_cancel(job_id: str) -> None:
    """Stop the rollout and cancel the runs that have not started."""
    print_job(api("POST", f"/api/v1/jobs/{job_id}/cancel"))


@app.command("pause")
def job_pause(job_id: str) -> None:
    """Create no new runs until resumed; runs already created go on."""
    print_job(api("POST", f"/api/v1/jobs/{job_id}/pause"))


@app.command("resume")
def job_resume(job_id: str) -> None:
    """Resume a paused job."""
    print_job(api("POST", f"/api/v1/jobs/{job_id}/resume"))
