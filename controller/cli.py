"""The `fleet` command: run the broker, controller and device daemon, and operate the fleet
from a terminal through the controller's REST API."""

from __future__ import annotations

import asyncio
import json
import secrets
import signal
import time
from contextlib import suppress
from pathlib import Path
from typing import Any, Optional

import httpx
import typer
from rich.console import Console
from rich.table import Table

from config.logging import configure_logging
from config.settings import ENV_PREFIX, FleetSettings, SettingsError, load_settings

app = typer.Typer(help="Command a fleet of PCs over MQTT.", no_args_is_help=True, add_completion=False)
task_app = typer.Typer(help="Create, inspect and cancel tasks.", no_args_is_help=True)
app.add_typer(task_app, name="task")
account_app = typer.Typer(help="Social-media accounts and the devices they are bound to.", no_args_is_help=True)
app.add_typer(account_app, name="account")
file_app = typer.Typer(help="Files (videos, covers) devices download for upload tasks.", no_args_is_help=True)
app.add_typer(file_app, name="file")
console = Console()
err_console = Console(stderr=True)


# ---- helpers --------------------------------------------------------------------------------


def _settings(**overrides: Any) -> FleetSettings:
    try:
        return load_settings(**overrides)
    except SettingsError as exc:
        err_console.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from None


async def _until_interrupted(*jobs: Any, stop: asyncio.Event) -> None:
    """Run coroutines until one ends or the user interrupts; then stop the rest."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with suppress(NotImplementedError, RuntimeError):  # Windows has no add_signal_handler
            loop.add_signal_handler(sig, stop.set)
    tasks = [asyncio.ensure_future(job) for job in jobs]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        for task in done:
            task.result()  # re-raise a failure of the job that ended first
    finally:
        stop.set()


def _params(param: list[str], params_json: Optional[str]) -> dict[str, Any]:
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


TOKEN_FILE = "api-token"


def _local_token(settings: FleetSettings) -> str | None:
    """The CLI's token: FLEET_API_TOKEN, else the one `fleet up` keeps in the data dir."""
    if settings.api_token is not None:
        return settings.api_token.get_secret_value()
    path = settings.data_dir / TOKEN_FILE
    return path.read_text(encoding="utf-8").strip() if path.is_file() else None


def _ensure_local_token(settings: FleetSettings) -> str:
    """The admin token `fleet up` runs with: FLEET_ADMIN_TOKEN, else one kept in the data dir
    (created on first use, readable by its owner only where the OS supports that)."""
    if settings.admin_token is not None:
        return settings.admin_token.get_secret_value()
    path = settings.data_dir / TOKEN_FILE
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(32), encoding="utf-8")
        path.chmod(0o600)
    return path.read_text(encoding="utf-8").strip()


def _api(method: str, path: str, **kwargs: Any) -> Any:
    settings = _settings()
    url = f"{settings.resolved_api_url}{path}"
    token = _local_token(settings)
    headers = {**kwargs.pop("headers", {}), **({"Authorization": f"Bearer {token}"} if token else {})}
    try:
        response = httpx.request(method, url, timeout=30, headers=headers, **kwargs)
    except httpx.HTTPError as exc:
        err_console.print(
            f"[red]error:[/red] cannot reach the controller at {settings.resolved_api_url} ({exc.__class__.__name__}). "
            f"Is `fleet controller` (or `fleet up`) running? Point the CLI elsewhere with {ENV_PREFIX}API_URL."
        )
        raise typer.Exit(1) from None
    if response.status_code >= 400:
        try:
            detail = response.json().get("detail", response.text)
        except ValueError:
            detail = response.text
        if isinstance(detail, list):  # FastAPI validation errors
            detail = "; ".join(f"{'.'.join(str(p) for p in d.get('loc', []))}: {d.get('msg')}" for d in detail)
        err_console.print(f"[red]error {response.status_code}:[/red] {detail}", highlight=False)
        raise typer.Exit(1)
    return response.json()


def _print_task(task: dict[str, Any]) -> None:
    attempt = f" (attempt {task['attempt']})" if task.get("attempt", 1) > 1 else ""
    console.print(
        f"[bold]{task['id']}[/bold]  {task['type']} on {task['device_id']}: [cyan]{task['status']}[/cyan]{attempt}"
    )
    for event in task.get("events", []):
        extra = event.get("message") or ""
        if event.get("progress") is not None:
            extra = f"{event['progress']}% {extra}"
        if not event.get("applied", True):
            extra = f"(late, not applied) {extra}"
        console.print(f"  {event['at']}  #{event.get('attempt', 1)} {event['event']:<10} {extra}", highlight=False)
    if task.get("retry_at"):
        console.print(f"  next attempt at {task['retry_at']}", highlight=False)
    details = task.get("details") or {}
    if details.get("waiting_for"):
        console.print(f"  waiting for: {details['waiting_for']}", highlight=False)
    if details.get("scan_url"):
        console.print(f"  scan the QR code (or open this link): {details['scan_url']}", highlight=False)
    if task.get("result") is not None:
        console.print_json(data={k: _short(v) for k, v in task["result"].items()})
    if task.get("error"):
        console.print(f"  [red]{task['error']['code']}[/red]: {task['error']['message']}", highlight=False)


def _short(value: Any) -> Any:
    """Long strings (a base64 screenshot) are shown by their size only."""
    return f"<{len(value)} characters>" if isinstance(value, str) and len(value) > 300 else value


FINAL = {"succeeded", "failed", "rejected", "timed_out", "canceled", "expired"}


def _wait_final(task_id: str, timeout: float) -> dict[str, Any]:
    """Poll until the task is final (and no retry is pending), telling the operator when it
    waits for them: a QR code to scan, a code to send."""
    deadline = time.monotonic() + timeout
    told: set[str] = set()
    while True:
        task = _api("GET", f"/api/v1/tasks/{task_id}")
        if (task["status"] in FINAL and not task.get("retry_at")) or time.monotonic() > deadline:
            return task
        details = task.get("details") or {}
        waiting = details.get("waiting_for")
        if waiting and f"{waiting}{details.get('wrong_code', '')}" not in told:
            told.add(f"{waiting}{details.get('wrong_code', '')}")
            if waiting == "scan":
                console.print(f"scan the QR code (or open this link): {details.get('scan_url', 'see the task details')}",
                              highlight=False)
            elif waiting == "code":
                wrong = "that code was wrong; " if details.get("wrong_code") else ""
                console.print(f"{wrong}send the code with:  fleet task input {task_id} <code>", highlight=False)
        time.sleep(0.2)


# ---- processes ------------------------------------------------------------------------------


@app.command()
def up(
    broker_port: Optional[int] = typer.Option(None, help="port of the embedded MQTT broker (default 1884)"),
    api_port: Optional[int] = typer.Option(None, help="port of the REST API (default 8080)"),
    data_dir: Optional[Path] = typer.Option(None, help="where databases, ids and journals live"),
    no_broker: bool = typer.Option(False, "--no-broker", help=f"use the broker at {ENV_PREFIX}MQTT_URL instead"),
    no_device: bool = typer.Option(False, "--no-device", help="do not start a local device"),
    site_port: int = typer.Option(8090, min=1, max=65535, help="port of the reference platform site"),
    no_site: bool = typer.Option(False, "--no-site", help="do not start the reference platform site"),
) -> None:
    """All in one, for a first look: embedded broker + controller + one local device + the
    reference platform site (to try login, upload and chat)."""
    from device.platforms.reference.site.server import port_free, serve_site

    if not no_site and not port_free("127.0.0.1", site_port):
        err_console.print(f"[yellow]note:[/yellow] port {site_port} is taken: the reference site is not started "
                          "(choose another with --site-port)")
        no_site = True
    overrides: dict[str, Any] = {"broker_port": broker_port, "api_port": api_port, "data_dir": data_dir}
    settings = _settings(**overrides)
    if not no_broker:
        host = "127.0.0.1" if settings.broker_host in ("0.0.0.0", "::") else settings.broker_host
        overrides["mqtt_url"] = f"mqtt://{host}:{settings.broker_port}"
    if not no_site and "reference" not in settings.platform_urls:
        overrides["platform_urls"] = {**settings.platform_urls, "reference": f"http://127.0.0.1:{site_port}"}
    overrides["admin_token"] = _ensure_local_token(settings)
    settings = _settings(**overrides)
    configure_logging(settings.log_level)

    from broker.embedded import BrokerConfigError, EmbeddedBroker, PortInUseError
    from controller.server import ControllerStartupError, serve
    from device.daemon import DeviceDaemon
    from device.identity import resolve_device_id

    try:
        device_id = None if no_device else resolve_device_id(settings)
    except ValueError as exc:  # an unreadable device id file
        err_console.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from None
    device_settings = settings
    if not no_broker and not settings.broker_allow_anonymous:
        # Secure by default: the embedded broker admits the controller and this device only.
        from controller.local_setup import CONTROLLER_USER, broker_files, ensure_local_logins

        password_file, acl_file = broker_files(settings.data_dir)
        overrides.update(broker_password_file=password_file, broker_acl_file=acl_file)
        settings = _settings(**overrides)
        logins = ensure_local_logins(settings, device_id)
        address = f"{settings.mqtt_url.host}:{settings.mqtt_url.port}"
        settings = _settings(**{**overrides, "mqtt_url": f"mqtt://{CONTROLLER_USER}:{logins.controller}@{address}"})
        device_settings = _settings(**{**overrides, "mqtt_url": f"mqtt://{device_id}:{logins.device}@{address}"})
    local_device = None if device_id is None else DeviceDaemon(device_settings)

    async def main() -> None:
        stop = asyncio.Event()
        embedded = None if no_broker else EmbeddedBroker(settings)
        if embedded is not None:
            await embedded.start()
        jobs: list[Any] = [serve(settings, stop)]
        if local_device is not None:
            jobs.append(local_device.run(stop))
        if not no_site:
            jobs.append(serve_site("127.0.0.1", site_port, settings.data_dir / "reference-site", stop))
        _banner(settings, device_id=local_device.device_id if local_device else None,
                site=None if no_site else f"http://127.0.0.1:{site_port}")
        try:
            await _until_interrupted(*jobs, stop=stop)
        finally:
            if embedded is not None:  # last, so the device's offline status still goes out
                await embedded.stop()

    try:
        asyncio.run(main())
    except (PortInUseError, BrokerConfigError, ControllerStartupError) as exc:
        err_console.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        pass


async def _stop_on(stop: asyncio.Event, action: Any) -> None:
    await stop.wait()
    await action()


def _banner(settings: FleetSettings, *, device_id: str | None, site: str | None) -> None:
    api = settings.resolved_api_url
    console.print(f"[bold green]fleet is up[/bold green]  broker {settings.mqtt_url.host}:{settings.mqtt_url.port}  API {api}  docs {api}/docs")
    console.print(f"  data in {settings.data_dir}")
    if site:
        console.print(f"  reference platform (a stand-in social site): {site}")
    if device_id:
        console.print(f"  local device: {device_id}")
        console.print("  try:  fleet devices")
        console.print(f"        fleet task send {device_id} ping --wait")
        if site:
            console.print(f"        fleet account add demo --platform reference --device {device_id}")
            console.print("        fleet task send - login --account demo -p platform=reference --wait --wait-timeout 300")
            console.print("        (open the printed scan link to play the phone that scans the QR code)")
    console.print("  stop with Ctrl-C")


@app.command()
def broker(
    host: Optional[str] = typer.Option(None, help="address to listen on (default 127.0.0.1)"),
    port: Optional[int] = typer.Option(None, help="TCP port (default 1884); TLS with FLEET_BROKER_CERTFILE/KEYFILE"),
    ws_port: Optional[int] = typer.Option(None, help="also listen for MQTT over websocket on this port (wss with TLS)"),
) -> None:
    """Run the embedded MQTT broker (amqtt) on its own."""
    settings = _settings(broker_host=host, broker_port=port, broker_ws_port=ws_port)
    configure_logging(settings.log_level)
    from broker.embedded import BrokerConfigError, EmbeddedBroker, PortInUseError

    async def main() -> None:
        embedded = EmbeddedBroker(settings)
        stop = asyncio.Event()
        await embedded.start()
        console.print(f"embedded MQTT broker listening on {', '.join(embedded.urls)} (Ctrl-C stops it)", highlight=False)
        await _until_interrupted(_stop_on(stop, embedded.stop), stop=stop)

    try:
        asyncio.run(main())
    except (PortInUseError, BrokerConfigError) as exc:
        err_console.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        pass


@app.command()
def controller(
    api_host: Optional[str] = typer.Option(None, help="address of the REST API (default 127.0.0.1)"),
    api_port: Optional[int] = typer.Option(None, help="port of the REST API (default 8080)"),
) -> None:
    """Run the controller: REST API, MQTT client and SQL store (FLEET_MQTT_URL, FLEET_DATABASE_URL)."""
    settings = _settings(api_host=api_host, api_port=api_port)
    configure_logging(settings.log_level)
    from controller.server import run_controller

    run_controller(settings)


device_app = typer.Typer(help="Run the device daemon (no sub-command), or provision devices on the broker.")
app.add_typer(device_app, name="device")


@device_app.callback(invoke_without_command=True)
def device(
    ctx: typer.Context,
    device_id: Optional[str] = typer.Option(None, "--id", help="device id (default: generated once and kept)"),
    name: Optional[str] = typer.Option(None, help="display name (default: host name)"),
) -> None:
    """Run the device daemon: connect to the broker, announce presence, execute tasks."""
    if ctx.invoked_subcommand is not None:
        return
    settings = _settings(device_id=device_id, device_name=name)
    configure_logging(settings.log_level)
    from device.daemon import run_device

    try:
        run_device(settings)
    except ValueError as exc:  # an unreadable device id file
        err_console.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from None


def _provision(name: str, role: str, groups: list[str]) -> None:
    """Create a broker identity in the controller's database and apply the broker files."""
    from pydantic import ValidationError

    from controller.db import create_db_engine, create_sessionmaker, migrate
    from controller.services.errors import ServiceError
    from controller.services.identities import add_identity, apply_to_broker
    from schemas.api import IdentityCreate

    try:
        body = IdentityCreate(name=name, role=role, groups=groups)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise typer.BadParameter("; ".join(f"{e['loc'][0]}: {e['msg']}" for e in exc.errors(include_input=False)))
    settings = _settings()
    if settings.broker_password_file is None:
        from controller.local_setup import broker_files

        password_file, acl_file = broker_files(settings.data_dir)
        if password_file.exists():  # the embedded broker of `fleet up` in this data dir
            settings = _settings(broker_password_file=password_file, broker_acl_file=acl_file)
    engine = create_db_engine(settings.resolved_database_url)
    migrate(engine)
    try:
        with create_sessionmaker(engine)() as session:
            identity, secret = add_identity(session, body)
            outcome = apply_to_broker(session, settings)
    except ServiceError as exc:
        err_console.print(f"[red]error:[/red] {exc.detail}", highlight=False)
        raise typer.Exit(1) from None
    finally:
        engine.dispose()
    console.print(f"{identity.role} {identity.name} provisioned; broker files: {outcome}")
    console.print(f"its MQTT password (shown once): {secret}", highlight=False, soft_wrap=True)
    console.print(f"e.g. FLEET_MQTT_URL=mqtt://{identity.name}:<password>@<broker host>:<port>", highlight=False)


@device_app.command("add")
def device_add(
    device_id: str = typer.Argument(..., help="the device id, which is also its MQTT user name"),
    group: list[str] = typer.Option([], "--group", "-g", help="a group it belongs to; repeatable"),
) -> None:
    """Provision a device: a random MQTT password (only its hash is kept) and its topic ACL."""
    _provision(device_id, "device", group)


@device_app.command("revoke")
def device_revoke(device_id: str) -> None:
    """Revoke a device: the broker refuses it from its next connection (no restart needed)."""
    revoked = _api("DELETE", f"/api/v1/identities/{device_id}")
    console.print(f"{revoked['role']} {revoked['name']} revoked")


identity_app = typer.Typer(help="Broker logins of the controller and operators.", no_args_is_help=True)
app.add_typer(identity_app, name="identity")


@identity_app.command("add")
def identity_add(
    name: str = typer.Argument(..., help="MQTT user name"),
    role: str = typer.Option(..., help="controller or operator (devices: fleet device add)"),
) -> None:
    """Provision the controller's or an operator's broker login (operators may publish tasks)."""
    if role not in ("controller", "operator"):
        raise typer.BadParameter(f"--role must be controller or operator, not {role!r}")
    _provision(name, role, [])


# ---- operating the fleet through REST ------------------------------------------------------


def _load(metrics: dict[str, Any] | None) -> str:
    """A device's latest heartbeat metrics in one cell: CPU, memory and free disk."""
    if not metrics:
        return ""
    return f"cpu {metrics['cpu_percent']:.0f}% mem {metrics['memory_percent']:.0f}% disk {metrics['disk_free_bytes'] / 1e9:.1f} GB free"


@app.command("devices")
def list_devices(
    status: Optional[str] = typer.Option(None, help="online or offline"),
    group: Optional[str] = typer.Option(None, help="only devices in this group"),
) -> None:
    """List devices with their presence."""
    query = {k: v for k, v in {"status": status, "group": group, "limit": 500}.items() if v is not None}
    page = _api("GET", "/api/v1/devices", params=query)
    table = Table("id", "name", "status", "last seen", "load", "task types", "groups")
    alerts = []
    for item in page["items"]:
        facts = item.get("facts") or {}
        colour = "green" if item["status"] == "online" else "red"
        table.add_row(
            item["id"], item.get("name") or "", f"[{colour}]{item['status']}[/{colour}]", str(item.get("last_seen") or ""),
            _load(item.get("metrics")), ",".join(facts.get("task_types", [])), ",".join(item.get("groups", [])),
        )
        if item.get("presence_alert"):
            alerts.append(f"[yellow]{item['id']}[/yellow]: {item['presence_alert']}")
    console.print(table)
    for alert in alerts:
        console.print(alert, highlight=False)
    console.print(f"{page['total']} device(s)")


@task_app.command("send")
def task_send(
    device_id: str = typer.Argument(..., help="target device id, or - to send it to the --account's device"),
    task_type: str = typer.Argument(..., help="task type, e.g. ping, echo, sleep, login, upload, chat"),
    param: list[str] = typer.Option([], "--param", "-p", help="a parameter as key=value (value may be JSON); repeatable"),
    params_json: Optional[str] = typer.Option(None, "--params", help="all parameters as one JSON object"),
    account: Optional[str] = typer.Option(None, help="account the task acts for"),
    ttl: Optional[float] = typer.Option(None, help="seconds before an unstarted task expires"),
    timeout: Optional[float] = typer.Option(None, help="seconds the task may run"),
    retries: Optional[int] = typer.Option(None, min=0, help="times a failed or timed-out task is run again"),
    retry_backoff: Optional[float] = typer.Option(None, min=0, help="seconds before the first retry (doubled each time)"),
    wait: bool = typer.Option(False, "--wait", help="wait for the final status and print the timeline"),
    wait_timeout: float = typer.Option(60, help="seconds to wait with --wait"),
) -> None:
    """Send a task to one device."""
    body: dict[str, Any] = {"device_id": None if device_id == "-" else device_id, "type": task_type, "params": _params(param, params_json)}
    options = {"account": account, "ttl": ttl, "timeout": timeout, "retries": retries, "retry_backoff": retry_backoff}
    body |= {k: v for k, v in options.items() if v is not None}
    task = _api("POST", "/api/v1/tasks", json=body)
    _print_task(_wait_final(task["id"], wait_timeout) if wait else task)


@task_app.command("show")
def task_show(task_id: str) -> None:
    """Show a task with its event timeline."""
    _print_task(_api("GET", f"/api/v1/tasks/{task_id}"))


@task_app.command("list")
def task_list(
    device_id: Optional[str] = typer.Option(None, "--device", help="only tasks of this device"),
    status: Optional[str] = typer.Option(None, help="only tasks in this status"),
    limit: int = typer.Option(50, min=1, max=1000),
) -> None:
    """List tasks, newest first."""
    query = {k: v for k, v in {"device_id": device_id, "status": status, "limit": limit}.items() if v is not None}
    page = _api("GET", "/api/v1/tasks", params=query)
    table = Table("id", "device", "type", "status", "created")
    for item in page["items"]:
        table.add_row(item["id"], item["device_id"], item["type"], item["status"], item["created_at"])
    console.print(table)


@task_app.command("sign")
def task_sign(envelope: str = typer.Argument(..., help='a task envelope as JSON, e.g. \'{"type": "ping"}\'')) -> None:
    """Sign a hand-written task with FLEET_TASK_SIGNING_KEY and print it for mosquitto_pub."""
    from pydantic import ValidationError

    from schemas.signing import sign
    from schemas.tasks import TaskEnvelope

    settings = _settings()
    if settings.task_signing_key is None:
        raise typer.BadParameter("set FLEET_TASK_SIGNING_KEY to the devices' key first")
    try:
        parsed = TaskEnvelope.model_validate_json(envelope)
    except ValidationError as exc:
        raise typer.BadParameter("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors(include_input=False)))
    signed = sign(parsed, settings.task_signing_key.get_secret_value().encode())
    print(signed.model_dump_json(exclude_none=True))


@task_app.command("input")
def task_input(
    task_id: str,
    value: str = typer.Argument(..., help="the value, e.g. the SMS code (never logged)"),
    name: str = typer.Option("code", help="what the task waits for (its details say: waiting_for)"),
) -> None:
    """Send a running task the input it waits for, e.g. a login's SMS code."""
    _api("POST", f"/api/v1/tasks/{task_id}/input", json={"name": name, "value": value})
    console.print(f"{name} sent to task {task_id}")


@task_app.command("cancel")
def task_cancel(task_id: str) -> None:
    """Cancel a task: a queued task never runs; a running one is told to stop."""
    _print_task(_api("POST", f"/api/v1/tasks/{task_id}/cancel"))


@account_app.command("add")
def account_add(
    name: str = typer.Argument(..., help="the account name tasks use"),
    platform: str = typer.Option(..., help="e.g. reference, douyin"),
    device: str = typer.Option(..., help="the device whose browser holds this account"),
) -> None:
    """Bind an account to a device; tasks may then name just the account."""
    account = _api("POST", "/api/v1/accounts", json={"name": name, "platform": platform, "device_id": device})
    console.print(f"account [bold]{account['name']}[/bold] ({account['platform']}) on {account['device_id']}")


@account_app.command("list")
def account_list() -> None:
    """List accounts with their devices and login status."""
    table = Table("account", "platform", "device", "login status", "last login")
    for item in _api("GET", "/api/v1/accounts"):
        table.add_row(item["name"], item["platform"], item["device_id"], item["login_status"], str(item["last_login_at"] or ""))
    console.print(table)


@file_app.command("upload")
def file_upload(path: Path = typer.Argument(..., exists=True, dir_okay=False, readable=True)) -> None:
    """Upload a file to the controller; prints the url, size and sha256 for an upload task."""
    with path.open("rb") as body:
        stored = _api("POST", "/api/v1/files", params={"name": path.name}, content=body,
                      headers={"content-type": "application/octet-stream"})
    console.print_json(data={k: stored[k] for k in ("url", "size", "sha256")})


token_app = typer.Typer(help="REST API tokens.", no_args_is_help=True)
app.add_typer(token_app, name="token")


@token_app.command("create")
def token_create(
    name: str = typer.Option(..., help="who or what uses it"),
    scope: str = typer.Option("operate", help="read, operate or admin"),
) -> None:
    """Create an API token in the controller's database (FLEET_DATABASE_URL); prints it once."""
    if scope not in ("read", "operate", "admin"):
        raise typer.BadParameter(f"--scope must be read, operate or admin, not {scope!r}")
    from controller.db import create_db_engine, create_sessionmaker, migrate
    from controller.services.tokens import create_token

    settings = _settings()
    engine = create_db_engine(settings.resolved_database_url)
    migrate(engine)
    with create_sessionmaker(engine)() as session:
        token, secret = create_token(session, name, scope)
    engine.dispose()
    console.print(f"token {token.id} ({scope}) for {name}:")
    console.print(secret, highlight=False, soft_wrap=True)
    console.print("send it as 'Authorization: Bearer <token>', or set FLEET_API_TOKEN for the CLI; it is not shown again")


@token_app.command("list")
def token_list() -> None:
    """List API tokens (never their secrets)."""
    table = Table("id", "name", "scope", "created", "last used", "revoked")
    for item in _api("GET", "/api/v1/tokens"):
        table.add_row(item["id"], item["name"], item["scope"], item["created_at"], str(item["last_used_at"] or ""),
                      str(item["revoked_at"] or ""))
    console.print(table)


@token_app.command("revoke")
def token_revoke(token_id: str) -> None:
    """Revoke an API token; requests with it get 401 from then on."""
    _api("DELETE", f"/api/v1/tokens/{token_id}")
    console.print(f"token {token_id} revoked")


@app.command()
def broadcast(
    task_type: str = typer.Argument(..., help="task type run by every device"),
    param: list[str] = typer.Option([], "--param", "-p", help="a parameter as key=value; repeatable"),
    params_json: Optional[str] = typer.Option(None, "--params", help="all parameters as one JSON object"),
    group: Optional[str] = typer.Option(None, help="only devices in this group"),
    include_offline: bool = typer.Option(False, "--include-offline", help="offline devices run it when they return"),
) -> None:
    """Send a task to every device (or every device of a group)."""
    body: dict[str, Any] = {"type": task_type, "params": _params(param, params_json), "include_offline": include_offline}
    if group:
        body["group"] = group
    result = _api("POST", "/api/v1/broadcasts", json=body)
    console.print(f"broadcast [bold]{result['id']}[/bold] to {len(result['task_ids'])} device(s)")


if __name__ == "__main__":
    app()
