"""The FastAPI application of the controller: wiring of settings, database, MQTT and routes."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from config.settings import FleetSettings
from controller import dashboard
from controller.alerts import hooks as alert_hooks
from controller.alerts.runner import AlertRunner
from controller.api.docs import add_docs
from controller.api.guard import API_PREFIX, RequestGuard
from controller.api.routes import (
    account_vault,
    accounts,
    broadcasts,
    devices,
    events,
    files,
    fleet_config,
    health,
    housekeeping,
    identities,
    jobs,
    pacing,
    releases,
    schedules,
    signatures,
    stats,
    targets,
    tasks,
    tokens,
)
from controller.api.routes import alerts as alert_routes
from controller.api.routes.health import package_version
from controller.api.routes.metrics import metrics_router
from controller.api.security import Read, VerifiedTokens
from controller.db import create_db_engine, create_read_sessionmaker, create_sessionmaker, migrate, safe_url
from controller.job_runner import JobRunner
from controller.live import LiveBus
from controller.live_feed import IngestFeed, watch_sessions
from controller.metrics import FleetMetrics
from controller.mqtt import ControllerMqtt
from controller.scheduler import Scheduler
from controller.services import account_backups, file_store, idempotency, retention, task_defaults
from controller.services import files as file_service
from controller.services.errors import ServiceError
from controller.services.idempotency import Pruner
from controller.services.tokens import ensure_bootstrap
from controller.signing_key import load_signer
from schemas.signing import Signer, public_key_text

log = logging.getLogger(__name__)

DESCRIPTION = """
Command a fleet of PCs over MQTT. Devices connect outbound to the broker; the controller
stores every task in SQL before it publishes it, and records what devices report.

* **devices** appear after their first connection, with their facts and presence history.
* **tasks** go to one device: queued → dispatched → accepted → running → succeeded | failed |
  rejected | timed_out | canceled | expired. A task for an offline device runs when it returns.
* **broadcasts** send one task to every device, or to the members of a group.
* **jobs** run one task over a target of devices, with a rollout rate, abort rules, and
  (continuous jobs) on devices that join the target later.
"""


async def _service_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    return JSONResponse(status_code=exc.status_code, content={"detail": exc.detail})


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's 422 body (a `detail` list with `loc`), minus the rejected input values:
    they may hold secrets such as passwords in task params."""
    assert isinstance(exc, RequestValidationError)
    detail: list[dict[str, Any]] = [
        {"loc": list(err.get("loc", ())), "msg": err.get("msg", ""), "type": err.get("type", "")}
        for err in exc.errors()  # FastAPI's own error list, not a pydantic ValidationError
    ]
    return JSONResponse(status_code=422, content=jsonable_encoder({"detail": detail}))


def _file_url_key(settings: FleetSettings, sessions: sessionmaker[Session]) -> bytes:
    """The key of signed file links: FLEET_FILE_URL_KEY; else, with the database file store,
    one kept in the database (the same on every controller); else one in the data dir."""
    if settings.file_url_key is not None:
        return settings.file_url_key.get_secret_value().encode()
    if settings.file_store == "database":
        with sessions() as session:
            return file_service.shared_url_key(session)
    return file_service.url_key(None, settings.data_dir)


@dataclass
class _Running:
    """What the lifespan starts, and stops in the reverse order."""

    live: LiveBus
    mqtt: ControllerMqtt
    scheduler: Scheduler
    alerts: AlertRunner | None
    jobs: JobRunner

    def start(self) -> None:
        self.mqtt.start()
        self.scheduler.start()
        self.jobs.start()
        if self.alerts is not None:
            self.alerts.start()

    def stop(self) -> None:
        self.live.close()
        if self.alerts is not None:
            self.alerts.stop()
        self.jobs.stop()
        self.scheduler.stop()
        self.mqtt.stop()


def _build(app: FastAPI, settings: FleetSettings, signer: Signer | None, engine: Engine) -> _Running:
    """The controller's parts, kept on `app.state` for the routes; nothing started yet."""
    sessions = create_sessionmaker(engine)
    task_defaults.use(settings.task_defaults)  # docs/architecture.md#housekeeping
    live = LiveBus(settings.live_queue_size)  # the push stream's bus: docs/architecture.md#push-stream
    watch_sessions(sessions, live)
    mqtt = ControllerMqtt(settings, sessions, signer, committed=IngestFeed(sessions, live))
    holder = f"{mqtt.client_id}@{socket.gethostname()}"
    scheduler = Scheduler(
        sessions, mqtt, interval=settings.sweep_interval, timeout_grace=settings.task_timeout_grace,
        resend_after=settings.task_resend_after, backlog=lambda: mqtt.ingest.queue, holder=holder,
        lease_seconds=settings.sweep_lease, connected=lambda: mqtt.connected, unacked_grace=settings.unacked_grace,
        schedule_missed_window=settings.schedule_missed_window,
    )
    state = app.state
    state.settings, state.engine, state.sessions = settings, engine, sessions
    state.read_sessions = create_read_sessionmaker(sessions)
    state.api_write_gate = threading.Lock()  # see controller.api.deps.write_turn
    state.verified_tokens = VerifiedTokens()
    state.mqtt, state.live, state.scheduler = mqtt, live, scheduler
    state.file_url_key = _file_url_key(settings, sessions)
    state.pruner = Pruner([idempotency.prune, file_store.prune_orphans])
    state.metrics = FleetMetrics(state.read_sessions, lambda: mqtt, settings.metrics_cache_seconds)
    mqtt.on_task_finished(state.metrics.observe)
    scheduler.finished_hooks.append(state.metrics.observe)
    scheduler.lease_jobs.append(retention.ScheduledPrune(settings, time.monotonic))
    if settings.session_backup_after_login:  # docs/architecture.md#the-session-vault
        scheduler.lease_jobs.append(account_backups.BackupAfterLogin(mqtt, settings.public_base_url, state.file_url_key))
    state.alerts = AlertRunner(settings, sessions, holder, state.read_sessions) if settings.alert_rules else None
    if state.alerts is not None:
        state.alerts.listeners.append(lambda event: live.publish([alert_hooks.to_live(event)]))
    state.jobs = JobRunner(  # docs/architecture.md#jobs
        sessions, mqtt, interval=settings.job_interval, max_runs=settings.job_max_runs_per_pass, holder=holder,
        lease_seconds=settings.sweep_lease, connected=lambda: mqtt.connected, live=live,
    )
    state.jobs.finished_hooks.append(state.metrics.observe)
    return _Running(live, mqtt, scheduler, state.alerts, state.jobs)


def _include_routes(app: FastAPI, settings: FleetSettings) -> None:
    app.include_router(health.router)
    app.include_router(metrics_router(settings.metrics_public))
    app.include_router(alert_routes.router, prefix=API_PREFIX)  # its own scopes: read, admin for a test
    for module in (fleet_config, devices, account_vault, accounts, tasks, broadcasts, jobs, files, stats, targets, schedules, pacing):
        app.include_router(module.router, prefix=API_PREFIX, dependencies=[Read])  # writes need Operate too
    app.include_router(housekeeping.router, prefix=API_PREFIX, dependencies=[Read])  # its own Operate/Admin guards
    app.include_router(tokens.router, prefix=API_PREFIX)
    app.include_router(identities.router, prefix=API_PREFIX)
    app.include_router(signatures.router, prefix=API_PREFIX)
    app.include_router(releases.router, prefix=API_PREFIX, dependencies=[Read])  # publish/rollout: Admin
    app.include_router(files.download_router, prefix=API_PREFIX)  # signed links, no token
    app.include_router(account_vault.upload_router, prefix=API_PREFIX)  # signed links, no token
    app.include_router(events.router, prefix=API_PREFIX)  # read scope: a bearer token or the dashboard's cookie
    dashboard.mount(app)  # the web dashboard at /


def create_app(settings: FleetSettings) -> FastAPI:
    """The controller app. Its lifespan opens the database (creating missing tables) and
    starts the MQTT client, which keeps retrying while the broker is down."""
    signer = load_signer(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_db_engine(settings.resolved_database_url)
        migrate(engine)
        running = _build(app, settings, signer, engine)
        if signer is not None:
            log.info("tasks are signed with key %s; devices trust it with FLEET_TASK_SIGNING_PUBLIC_KEYS='[\"%s\"]'",
                     signer.key_id, public_key_text(signer.public_key))
        log.info("controller database: %s", safe_url(settings.resolved_database_url))
        if settings.admin_token is not None:
            with app.state.sessions() as session:
                ensure_bootstrap(session, settings.admin_token.get_secret_value())
        running.start()
        try:
            yield
        finally:
            running.stop()
            engine.dispose()

    app = FastAPI(
        title="MQTT fleet controller",
        description=DESCRIPTION,
        version=package_version(),
        lifespan=lifespan,
        docs_url=None,  # add_docs serves /docs and /redoc without a CDN
        redoc_url=None,
    )
    app.state.signer = signer
    add_docs(app)
    app.add_middleware(RequestGuard, limit=settings.max_request_bytes)
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    _include_routes(app, settings)
    return app
