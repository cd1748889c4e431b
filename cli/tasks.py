"""`fleet task …` (send, send-batch, show, list, sign, input, cancel) and `fleet broadcast`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Optional

import typer
from pydantic.fields import FieldInfo
from rich.table import Table

from cli import housekeeping
from cli.output import console, print_task
from cli.progress import wait_final
from cli.rest import api, new_idempotency_key
from schemas.api import TASK_BATCH_LIMIT
from schemas.tasks import BUILTIN_PARAMS, CONTROL_TYPES

SIGNING_SETTING = "FLEET_TASK_SIGNING_PRIVATE_KEY_FILE"
RUN_AT_HELP = ("publish it only from this time on, ISO 8601 with a zone, e.g. 2026-12-01T09:00:00+08:00 "
               "(it waits queued until then)")
KEY_HELP = ("the request's Idempotency-Key (a new UUID per run when absent): a run repeated with the same key and "
            "the same task within a day creates nothing new")

app = typer.Typer(help="Create, inspect and cancel tasks.", no_args_is_help=True)


def parse_params(param: list[str], params_json: Optional[str]) -> dict[str, Any]:
    """--params JSON merged with repeated --param key=value (a value may be JSON)."""
    result: dict[str, Any] = {}
    if params_json:
        try:
            loaded = json.loads(params_json)
        except json.JSONDecodeError as exc:
            raise typer.BadParameter(f"--params is not valid JSON ({exc.msg}); e.g. --params '{{\"seconds\": 2}}'")
        if not isinstance(loaded, dict):
            raise typer.BadParameter("--params must be a JSON object, e.g. --params '{\"seconds\": 2}'")
        result.update(loaded)
    for item in param:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"--param {item!r} must look like key=value, e.g. --param seconds=2")
        try:
            result[key] = json.loads(raw)
        except json.JSONDecodeError:
            result[key] = raw
    return result


def _field_help(name: str, info: FieldInfo) -> str:
    if info.is_required():
        text = f"{name} (required)"
    else:
        default = info.get_default(call_default_factory=True)
        text = name if default in (None, "", [], {}) else f"{name}={json.dumps(default, default=str)}"
    return f"{text}: {info.description}" if info.description else text


def params_help() -> str:
    """Each built-in task type with its parameters, from the models in `schemas/tasks.py`."""
    lines = ["Parameters of the built-in task types (-p key=value):"]
    for task_type, model in BUILTIN_PARAMS.items():
        if task_type in CONTROL_TYPES:
            continue
        fields = "; ".join(_field_help(name, info) for name, info in model.model_fields.items())
        lines.append(f"{task_type}: {fields or 'none'}")
    return "\n\n".join(lines)


@app.command("send", epilog=params_help())
def task_send(
    device_id: str = typer.Argument(..., help="target device id, or - to send it to the --account's device"),
    task_type: str = typer.Argument(..., help="task type, e.g. ping, echo, sleep, login, upload, chat"),
    param: list[str] = typer.Option([], "--param", "-p", help="a parameter as key=value (value may be JSON); repeatable"),
    params_json: Optional[str] = typer.Option(None, "--params", help="all parameters as one JSON object"),
    account: Optional[str] = typer.Option(None, help="account the task acts for"),
    ttl: Optional[float] = typer.Option(None, help="seconds before an unstarted task expires (from --run-at if given)"),
    timeout: Optional[float] = typer.Option(None, help="seconds the task may run"),
    run_at: Optional[str] = typer.Option(None, "--run-at", metavar="TIME", help=RUN_AT_HELP),
    retries: Optional[int] = typer.Option(None, min=0, help="times a failed or timed-out task is run again"),
    retry_backoff: Optional[float] = typer.Option(None, min=0, help="seconds before the first retry (doubled each time)"),
    wait: bool = typer.Option(False, "--wait", help="show live progress until the task is final, then its timeline"),
    wait_timeout: float = typer.Option(60, help="seconds to wait with --wait"),
    idempotency_key: Optional[str] = typer.Option(
        None, "--idempotency-key", metavar="KEY", help=KEY_HELP,
    ),
    task_id: Optional[str] = typer.Option(None, "--id", help="the task's id (random when absent); the same id with "
                                          "the same task again answers that task instead of creating another"),
    place_in: list[str] = typer.Option([], "--place-in", metavar="GROUP", help="with device id -: run it on the "
                                       "least-loaded online device of this group (repeatable: any of them)"),
) -> None:
    """Send a task to one device. A failed connection is retried with the same Idempotency-Key,
    so the task is created once."""
    body: dict[str, Any] = {"device_id": None if device_id == "-" else device_id, "type": task_type,
                            "params": parse_params(param, params_json)}
    if place_in:
        body["placement"] = {"target": {"groups": place_in}}
    options = {"account": account, "ttl": ttl, "timeout": timeout, "retries": retries, "retry_backoff": retry_backoff,
               "run_at": run_at}
    body |= {k: v for k, v in options.items() if v is not None}
    if task_id is not None:
        body["id"] = task_id
    task = api("POST", "/api/v1/tasks", json=body, idempotency_key=idempotency_key or new_idempotency_key())
    print_task(wait_final(task["id"], wait_timeout) if wait else task)


def read_batch(file: str) -> list[Any]:
    """The task list of `send-batch`: a JSON array from a file, or from stdin for `-`."""
    try:
        text = sys.stdin.read() if file == "-" else Path(file).read_text()
    except OSError as exc:
        raise typer.BadParameter(f"cannot read {file}: {exc.strerror}")
    try:
        loaded = json.loads(text)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"{file} is not valid JSON ({exc.msg} at line {exc.lineno})")
    if not isinstance(loaded, list) or not loaded:
        raise typer.BadParameter(f'{file} must hold a JSON array of tasks, e.g. [{{"device_id": "pc-01", "type": "ping"}}]')
    return loaded


@app.command("send-batch", help=f"Send up to {TASK_BATCH_LIMIT:,} tasks in one request: all are created, or none (the "
             "error names each wrong item by its index). Prints one line per task: its id, device and type.")
def task_send_batch(
    file: str = typer.Argument(..., help='a JSON array of tasks as for `task send`, e.g. [{"device_id": "pc-01", '
                                         '"type": "echo", "params": {"message": "hi"}}]; - reads stdin'),
    idempotency_key: Optional[str] = typer.Option(None, "--idempotency-key", metavar="KEY", help=KEY_HELP),
) -> None:
    tasks = read_batch(file)
    if len(tasks) > TASK_BATCH_LIMIT:
        raise typer.BadParameter(f"{file} holds {len(tasks)} tasks; one batch takes at most {TASK_BATCH_LIMIT}: split it")
    created = api("POST", "/api/v1/tasks/batch", json={"tasks": tasks},
                  idempotency_key=idempotency_key or new_idempotency_key())["items"]
    for task in created:
        print(f"{task['id']}\t{task['device_id']}\t{task['type']}")
    console.print(f"{len(created)} task(s) created", highlight=False)


@app.command("show")
def task_show(task_id: str) -> None:
    """Show a task with its event timeline."""
    print_task(api("GET", f"/api/v1/tasks/{task_id}"))


@app.command("list")
def task_list(
    device_id: Optional[str] = typer.Option(None, "--device", help="only tasks of this device"),
    status: Optional[str] = typer.Option(None, help="only tasks in this status"),
    limit: int = typer.Option(50, min=1, max=1000),
) -> None:
    """List tasks, newest first."""
    query = {k: v for k, v in {"device_id": device_id, "status": status, "limit": limit}.items() if v is not None}
    page = api("GET", "/api/v1/tasks", params=query)
    table = Table("id", "device", "type", "status", "created")
    for item in page["items"]:
        table.add_row(item["id"], item["device_id"], item["type"], item["status"], item["created_at"])
    console.print(table)


@app.command("sign")
def task_sign(
    envelope: str = typer.Argument(..., help='a task envelope as JSON, e.g. \'{"type": "ping"}\''),
    device_id: Optional[str] = typer.Option(None, "--device", help="sign it for devices/<id>/tasks"),
    group: Optional[str] = typer.Option(None, help="sign it for fleet/groups/<group>/tasks"),
    broadcast: bool = typer.Option(False, "--broadcast", help="sign it for fleet/broadcast/tasks"),
) -> None:
    """Have the controller sign a hand-written task (admin token) and print it for mosquitto_pub.

    The signature is valid for 5 minutes, on the one topic given: publish it there."""
    if sum([device_id is not None, group is not None, broadcast]) != 1:
        raise typer.BadParameter("give exactly one of --device ID, --group NAME or --broadcast: the topic you will publish it to")
    try:
        task = json.loads(envelope)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"the envelope is not valid JSON ({exc.msg}); e.g. '{{\"type\": \"ping\"}}'")
    body = {"task": task, "device_id": device_id, "group": group, "broadcast": broadcast}
    print(json.dumps(api("POST", "/api/v1/signatures", json=body), separators=(",", ":")))


@app.command("signing-key")
def task_signing_key(
    file: Optional[Path] = typer.Option(None, help="a private key file (PEM) instead of the running controller's key"),
) -> None:
    """Print the controller's public signing key, as devices list it in FLEET_TASK_SIGNING_PUBLIC_KEYS."""
    if file is not None:
        from controller.signing_key import SigningKeyError, read_signer
        from schemas.signing import public_key_text

        try:
            signer = read_signer(file)
        except SigningKeyError as exc:
            raise typer.BadParameter(str(exc).replace(SIGNING_SETTING, "--file"))
        key = {"key_id": signer.key_id, "public_key": public_key_text(signer.public_key)}
    else:
        key = api("GET", "/api/v1/signatures/key")
    console.print(f"key id {key['key_id']}; on each device add it to:", highlight=False)
    print(f"FLEET_TASK_SIGNING_PUBLIC_KEYS='[\"{key['public_key']}\"]'")


@app.command("input")
def task_input(
    task_id: str,
    value: str = typer.Argument(..., help="the value, e.g. the SMS code (never logged)"),
    name: str = typer.Option("code", help="what the task waits for (its details say: waiting_for)"),
) -> None:
    """Send a running task the input it waits for, e.g. a login's SMS code."""
    api("POST", f"/api/v1/tasks/{task_id}/input", json={"name": name, "value": value})
    console.print(f"{name} sent to task {task_id}")


app.command("cancel")(housekeeping.task_cancel)  # one task, or by --device/--account/--broadcast/--job/--type


def broadcast(
    task_type: str = typer.Argument(..., help="task type run by every device"),
    param: list[str] = typer.Option([], "--param", "-p", help="a parameter as key=value; repeatable"),
    params_json: Optional[str] = typer.Option(None, "--params", help="all parameters as one JSON object"),
    group: Optional[str] = typer.Option(None, help="only devices in this group"),
    include_offline: bool = typer.Option(False, "--include-offline", help="offline devices run it when they return"),
    run_at: Optional[str] = typer.Option(None, "--run-at", metavar="TIME", help=RUN_AT_HELP),
    idempotency_key: Optional[str] = typer.Option(None, "--idempotency-key", metavar="KEY", help=KEY_HELP),
) -> None:
    """Send a task to every device (or every device of a group)."""
    body: dict[str, Any] = {"type": task_type, "params": parse_params(param, params_json),
                            "include_offline": include_offline}
    if group:
        body["group"] = group
    if run_at:
        body["run_at"] = run_at
    result = api("POST", "/api/v1/broadcasts", json=body, idempotency_key=idempotency_key or new_idempotency_key())
    console.print(f"broadcast [bold]{result['id']}[/bold] to {len(result['task_ids'])} device(s)")
