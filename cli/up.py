"""`fleet up`: embedded broker + controller + one local device + the reference site in one
process, for a first look. The banner prints only once every listener is up; while it runs,
`<data dir>/runtime.json` tells a CLI in another terminal where the API is."""

from __future__ import annotations

import asyncio
import os
import shlex
from pathlib import Path
from typing import Any, Optional

import typer

from cli.local import Runtime, ensure_local_token, remove_runtime, settings, write_runtime
from cli.output import console, fail
from cli.processes import run_until_interrupted
from config.logging import configure_logging
from config.settings import ENV_PREFIX, FleetSettings, default_data_dir

SITE_HOST = "127.0.0.1"


def _check_site_port(site_port: int) -> None:
    from device.platforms.reference.site.server import port_free

    if not port_free(SITE_HOST, site_port):
        fail(f"port {site_port} of the reference platform site is already in use; choose another with "
             "--site-port, or --no-site to start none (the local device would otherwise log in to that other site)")


def _local_settings(overrides: dict[str, Any], device_id: str | None) -> tuple[FleetSettings, FleetSettings]:
    """The controller's and the device's settings: on the embedded broker (secure by default)
    each gets its own login, provisioned in the controller's database."""
    from controller.db import DatabaseSetupError
    from controller.local_setup import CONTROLLER_USER, broker_files, ensure_local_logins

    config = settings(**overrides)
    password_file, acl_file = broker_files(config.data_dir)
    overrides.update(broker_password_file=password_file, broker_acl_file=acl_file)
    config = settings(**overrides)
    try:
        logins = ensure_local_logins(config, device_id)
    except DatabaseSetupError as exc:
        fail(str(exc))
    address = f"{config.mqtt_urls[0].host}:{config.mqtt_urls[0].port}"  # fleet up runs one broker
    return (settings(**{**overrides, "mqtt_url": f"mqtt://{CONTROLLER_USER}:{logins.controller}@{address}"}),
            settings(**{**overrides, "mqtt_url": f"mqtt://{device_id}:{logins.device}@{address}"}))


def up(
    broker_port: Optional[int] = typer.Option(None, metavar="PORT", help="port of the embedded MQTT broker (default 1884)"),
    api_port: Optional[int] = typer.Option(None, metavar="PORT", help="port of the REST API (default 8080)"),
    data_dir: Optional[Path] = typer.Option(None, metavar="DIR", help="where databases, ids and journals live"),
    no_broker: bool = typer.Option(False, "--no-broker", help=f"use the broker at {ENV_PREFIX}MQTT_URL instead"),
    no_device: bool = typer.Option(False, "--no-device", help="do not start a local device"),
    site_port: int = typer.Option(8090, min=1, max=65535, metavar="PORT", help="port of the reference platform site"),
    no_site: bool = typer.Option(False, "--no-site", help="do not start the reference platform site"),
) -> None:
    """All in one, for a first look: embedded broker + controller + one local device + the
    reference platform site (to try login, upload and chat)."""
    if not no_site:
        _check_site_port(site_port)
    overrides: dict[str, Any] = {"broker_port": broker_port, "api_port": api_port, "data_dir": data_dir}
    config = settings(**overrides)
    if not no_broker:
        host = "127.0.0.1" if config.broker_host in ("0.0.0.0", "::") else config.broker_host
        overrides["mqtt_url"] = f"mqtt://{host}:{config.broker_port}"
    site = None if no_site else f"http://{SITE_HOST}:{site_port}"
    if site and "reference" not in config.platform_urls:
        overrides["platform_urls"] = {**config.platform_urls, "reference": site}
    overrides["admin_token"] = ensure_local_token(config)
    config = settings(**overrides)
    configure_logging(config.log_level)
    from device.identity import resolve_device_id

    try:
        device_id = None if no_device else resolve_device_id(config)
    except ValueError as exc:  # an unreadable device id file
        fail(str(exc))
    device_config = config
    if not no_broker and not config.broker_allow_anonymous:
        config, device_config = _local_settings(overrides, device_id)
    _run(config, device_config if device_id else None, embedded_broker=not no_broker, site_port=None if no_site else site_port)


def _run(config: FleetSettings, device_config: FleetSettings | None, *, embedded_broker: bool, site_port: int | None) -> None:
    from broker.embedded import BrokerConfigError, EmbeddedBroker, PortInUseError
    from controller.server import ControllerStartupError, serve
    from device.daemon import DeviceDaemon
    from device.platforms.reference.site.server import serve_site

    local_device = None if device_config is None else DeviceDaemon(device_config)

    async def main() -> None:
        stop, api_ready, site_ready = asyncio.Event(), asyncio.Event(), asyncio.Event()
        embedded = EmbeddedBroker(config) if embedded_broker else None
        if embedded is not None:
            await embedded.start()  # listening when this returns; PortInUseError otherwise
        jobs: list[Any] = [serve(config, stop, api_ready)]
        ready = [api_ready]
        if local_device is not None:
            jobs.append(local_device.run(stop))
        if site_port is not None:
            jobs.append(serve_site(SITE_HOST, site_port, config.data_dir / "reference-site", stop, site_ready))
            ready.append(site_ready)
        device_id = local_device.device_id if local_device else None

        def announce() -> None:
            write_runtime(config.data_dir, _runtime(config, device_id, site_port))
            banner(config, device_id=device_id, site=None if site_port is None else f"http://{SITE_HOST}:{site_port}")

        try:
            await run_until_interrupted(*jobs, stop=stop, ready=tuple(ready), on_ready=announce)
        finally:
            remove_runtime(config.data_dir)
            if embedded is not None:  # last, so the device's offline status still goes out
                await embedded.stop()

    try:
        asyncio.run(main())
    except (PortInUseError, BrokerConfigError, ControllerStartupError) as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        pass


def _runtime(config: FleetSettings, device_id: str | None, site_port: int | None) -> Runtime:
    url = config.mqtt_urls[0]
    return Runtime(api_url=config.resolved_api_url, mqtt_url=f"{url.scheme}://{url.host}:{url.port}",
                   device_id=device_id, site_url=None if site_port is None else f"http://{SITE_HOST}:{site_port}",
                   pid=os.getpid())


def banner(config: FleetSettings, *, device_id: str | None, site: str | None) -> None:
    """What runs where, and commands to try that work as printed for these ports and data dir."""
    api = config.resolved_api_url
    prefix = "" if config.data_dir == default_data_dir() else f"{ENV_PREFIX}DATA_DIR={shlex.quote(str(config.data_dir))} "
    console.print(f"[bold green]fleet is up[/bold green]  broker {config.mqtt_urls[0].host}:{config.mqtt_urls[0].port}  "
                  f"API {api}  docs {api}/docs", highlight=False, soft_wrap=True)
    console.print(f"  data in {config.data_dir}", highlight=False, soft_wrap=True)
    if site:
        console.print(f"  reference platform (a stand-in social site): {site}", highlight=False, soft_wrap=True)
    if device_id:
        console.print(f"  local device: {device_id}", highlight=False, soft_wrap=True)
        console.print(f"  try:  {prefix}fleet devices", highlight=False, soft_wrap=True)
        console.print(f"        {prefix}fleet task send {device_id} ping --wait", highlight=False, soft_wrap=True)
        if site:
            console.print(f"        {prefix}fleet account add demo --platform reference --device {device_id}", highlight=False, soft_wrap=True)
            console.print(f"        {prefix}fleet task send - login --account demo -p platform=reference --wait "
                          "--wait-timeout 300", highlight=False, soft_wrap=True)
            console.print("        (open the printed scan link to play the phone that scans the QR code)", soft_wrap=True)
    console.print(f'  shell: eval "$({prefix}fleet env)"   # sets API, MQTT_HOST, MQTT_PORT, DEVICE for recipes',
                  highlight=False, soft_wrap=True)
    console.print("  stop with Ctrl-C")
