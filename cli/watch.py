"""`fleet watch`: follow the controller's push stream (`GET /api/v1/events/stream`), one line
per event (`--json`: the raw event objects, one JSON per line). When the stream drops it
reconnects by itself (1, 2, 4 … 15 s apart); Ctrl-C ends it quietly."""

from __future__ import annotations

import json
import signal
import ssl
import time
from typing import Any, Optional

import typer

from cli.local import api_url, local_token, settings
from cli.output import console, err_console, fail, load_cell
from config.tls import CaFileError, client_verify, untrusted_certificate
from schemas.live import LIVE_KINDS

MAX_PAUSE = 15.0
READ_TIMEOUT_PINGS = 3  # a stream silent for this many ping intervals is taken for dead


def _csv(values: list[str] | None) -> list[str]:
    return [part.strip() for value in values or [] for part in value.split(",") if part.strip()]


def line(event: dict[str, Any]) -> str:
    """One human-readable line for a stream event."""
    at, kind = str(event.get("at", ""))[:23].replace("T", " "), event.get("kind")
    task = str(event.get("task_id", ""))[:12]
    progress = f" {event['progress']}%" if event.get("progress") is not None else ""
    if kind == "task":
        text = f"task   {task} {event['type']} on {event['device_id']}: {event['status']}{progress}"
    elif kind == "task_event":
        details = f" details: {json.dumps(event['details'], ensure_ascii=False)[:200]}" if event.get("details") else ""
        message = f" {event['message']}" if event.get("message") else ""
        text = f"event  {task} #{event.get('attempt', 1)} {event['event']}{progress}{message}{details}"
    elif kind == "presence":
        reason = f" ({event['reason']})" if event.get("reason") else ""
        text = f"device {event['device_id']} {event['status']}{reason}"
    elif kind == "load":
        text = f"load   {event['device_id']} {load_cell(event.get('metrics')) or 'no metrics'}"
    elif kind == "alert":
        target = " ".join(f"{name}={event[name]}" for name in ("device_id", "task_id", "account") if event.get(name))
        text = f"ALERT  {event['rule']}: {event['message']} {target}".rstrip()
    elif kind == "dropped":
        text = f"dropped {event['count']} events: this watch read too slowly; what it showed may be out of date"
    elif kind == "hello":
        text = f"connected to controller {event.get('controller') or '?'}"
    else:
        text = json.dumps(event, ensure_ascii=False)
    return f"{at}  {text}"


def _params(kinds: list[str], devices: list[str], tasks: list[str]) -> dict[str, str]:
    unknown = sorted(set(kinds) - set(LIVE_KINDS))
    if unknown:
        fail(f"--kind {', '.join(unknown)}: unknown event kind; use some of {', '.join(LIVE_KINDS)}")
    params = {"kinds": ",".join(kinds), "device": ",".join(devices), "task": ",".join(tasks)}
    return {name: value for name, value in params.items() if value}


def _follow(url: str, headers: dict[str, str], params: dict[str, str], read_timeout: float, as_json: bool,
            count: int | None, verify: ssl.SSLContext | bool) -> int:
    """Print events until the stream ends; returns how many were printed. Raises httpx errors."""
    import httpx
    from httpx_sse import connect_sse

    printed = 0
    timeout = httpx.Timeout(10.0, read=read_timeout)
    client = httpx.Client(timeout=timeout, headers=headers, verify=verify)
    with client, connect_sse(client, "GET", url, params=params) as source:
        if source.response.status_code in (401, 403, 404, 422):
            source.response.read()
            try:
                detail = source.response.json().get("detail")
            except ValueError:
                detail = source.response.text
            fail(f"the controller refused the stream ({source.response.status_code}): {detail}", code=1)
        source.response.raise_for_status()
        for message in source.iter_sse():
            event = json.loads(message.data)
            if as_json:
                console.out(json.dumps(event, ensure_ascii=False), highlight=False)
            elif event.get("kind") == "hello":
                err_console.print(line(event), highlight=False)
            else:
                console.out(line(event), highlight=False)
            printed += event.get("kind") != "hello"
            if count is not None and printed >= count:
                break
    return printed


def watch(
    kind: Optional[list[str]] = typer.Option(None, "--kind", "-k", help=f"only these kinds: {', '.join(LIVE_KINDS[1:6])}"),
    device: Optional[list[str]] = typer.Option(None, "--device", "-d", help="only events of these devices"),
    task: Optional[list[str]] = typer.Option(None, "--task", "-t", help="only events of these tasks"),
    as_json: bool = typer.Option(False, "--json", help="print each event as one line of JSON"),
    count: Optional[int] = typer.Option(None, "--count", min=1, help="exit after this many events"),
) -> None:
    """Follow the fleet live: task changes, task events, device presence and load, alerts."""
    import httpx

    config = settings()
    token = local_token(config)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    params = _params(_csv(kind), _csv(device), _csv(task))
    url = f"{api_url(config)}/api/v1/events/stream"
    read_timeout = READ_TIMEOUT_PINGS * config.live_ping_interval
    pause, left = 1.0, count
    try:
        verify = client_verify(config.api_ca_file)
    except CaFileError as exc:
        fail(str(exc), code=2)
    # Ctrl-C ends it even when started with SIGINT ignored (a background job of a script
    # inherits that, and Python then never raises KeyboardInterrupt).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        while True:
            try:
                shown = _follow(url, headers, params, read_timeout, as_json, left, verify)
                pause = 1.0
                if left is not None:
                    left -= shown
                    if left <= 0:
                        return
                reason = "the controller ended the stream"
            except (httpx.HTTPError, ValueError) as exc:
                untrusted = untrusted_certificate(exc, url)
                if untrusted is not None:
                    fail(untrusted, code=1)  # reconnecting cannot help
                reason = str(exc) or type(exc).__name__
            err_console.print(f"stream lost ({reason}); reconnecting in {pause:.0f} s", highlight=False)
            time.sleep(pause)
            pause = min(MAX_PAUSE, pause * 2)
    except KeyboardInterrupt:
        raise typer.Exit(0) from None
