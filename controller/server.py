"""Running the controller: uvicorn served programmatically, so `fleet up` can run it in one
event loop beside the embedded broker and a device, and `run_controller` for the controller alone."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import ssl
import sys
from collections.abc import Iterator

import uvicorn

from config.logging import configure_logging
from config.settings import FleetSettings
from controller.app import create_app
from controller.db import DatabaseSetupError, open_database
from controller.signing_key import SigningKeyError, load_signer
from schemas.errors import ControllerError

log = logging.getLogger(__name__)


class ControllerStartupError(ControllerError):
    """The controller cannot start; the message says why and which setting to change."""


class _Server(uvicorn.Server):
    """uvicorn's server, leaving signal handling to the caller when it owns the stop event."""

    def __init__(self, config: uvicorn.Config, *, handle_signals: bool, ready: asyncio.Event | None) -> None:
        super().__init__(config)
        self._handle_signals = handle_signals
        self._ready = ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started and not self.should_exit and self._ready is not None:
            self._ready.set()  # listening, and the app's lifespan (database, MQTT client) started

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if self._handle_signals:
            with super().capture_signals():
                yield
        else:
            yield


def _bind(host: str, port: int) -> socket.socket:
    """The API's listening socket, bound here so a taken port is a clear error, not a traceback."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as exc:
        raise ControllerStartupError(
            f"cannot listen on {host}:{port}: unknown host ({exc.strerror}); set FLEET_API_HOST to an address of this machine"
        ) from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            reason = (
                f"port {port} is already in use by another program; "
                "stop it or choose another port with FLEET_API_PORT (or --api-port)"
            )
        elif exc.errno == errno.EACCES:
            reason = f"no permission to use port {port}; choose a port above 1023 with FLEET_API_PORT (or --api-port)"
        elif exc.errno == errno.EADDRNOTAVAIL:
            reason = f"{host} is not an address of this machine; fix FLEET_API_HOST"
        else:
            reason = f"{exc.strerror}; check FLEET_API_HOST and FLEET_API_PORT"
        raise ControllerStartupError(f"cannot listen on {host}:{port}: {reason}") from None
    sock.set_inheritable(True)
    return sock


def _check_database(settings: FleetSettings) -> None:
    """Open the database and create missing tables before serving, so a wrong URL or a
    stopped PostgreSQL is one clear error instead of a failed lifespan with a traceback."""
    try:
        open_database(settings.resolved_database_url).dispose()
    except DatabaseSetupError as exc:
        raise ControllerStartupError(str(exc)) from None


def _check_signing_key(settings: FleetSettings) -> None:
    """Read (or create) the task signing key before serving: a bad key file is one clear error."""
    try:
        load_signer(settings)
    except SigningKeyError as exc:
        raise ControllerStartupError(str(exc)) from None


def _check_tls(settings: FleetSettings) -> None:
    """Load the API's certificate and key once here, so an unreadable or mismatched pair is one
    clear line naming the settings, not uvicorn's traceback."""
    if settings.api_certfile is None or settings.api_keyfile is None:
        return
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(settings.api_certfile, settings.api_keyfile)
    except (OSError, ssl.SSLError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__
        raise ControllerStartupError(
            f"cannot serve HTTPS with FLEET_API_CERTFILE={settings.api_certfile} and FLEET_API_KEYFILE="
            f"{settings.api_keyfile}: {reason}; give a readable PEM certificate (chain) and its own private key"
        ) from None


async def _exit_when_set(server: uvicorn.Server, stop: asyncio.Event) -> None:
    await stop.wait()
    server.should_exit = True


async def serve(settings: FleetSettings, stop: asyncio.Event | None = None, ready: asyncio.Event | None = None) -> None:
    """Serve the REST API and run the MQTT client until `stop` is set; `ready` is set once
    the API listens and the app has started.

    Without `stop`, uvicorn handles SIGINT/SIGTERM itself; with it, the caller owns signals.
    Raises `ControllerStartupError` when the port or the database cannot be used. Access
    lines (one per request, e.g. the CLI's polling) are logged only at DEBUG.
    """
    await asyncio.to_thread(_check_database, settings)
    _check_signing_key(settings)
    _check_tls(settings)
    sock = _bind(settings.api_host, settings.api_port)
    config = uvicorn.Config(
        create_app(settings),
        host=settings.api_host,
        port=settings.api_port,
        log_level=settings.log_level.lower(),
        lifespan="on",
        access_log=settings.log_level == "DEBUG",
        ssl_certfile=settings.api_certfile,
        ssl_keyfile=settings.api_keyfile,
    )
    server = _Server(config, handle_signals=stop is None, ready=ready)
    watcher = asyncio.create_task(_exit_when_set(server, stop)) if stop is not None else None
    scheme = "https" if settings.api_certfile is not None else "http"
    log.info("REST API on %s://%s:%d (OpenAPI docs at /docs)", scheme, settings.api_host, settings.api_port)
    try:
        await server.serve(sockets=[sock])
    except SystemExit:
        raise ControllerStartupError("the controller failed to start; see the log above") from None
    finally:
        if watcher is not None:
            watcher.cancel()
        sock.close()


def run_controller(settings: FleetSettings) -> None:
    """Run the controller until Ctrl-C. A startup problem is printed as one line and exits with
    status 2, like the CLI's other configuration errors."""
    configure_logging(settings.log_level)
    try:
        asyncio.run(serve(settings))
    except KeyboardInterrupt:
        pass
    except ControllerStartupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
