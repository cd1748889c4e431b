"""`GET /healthz`: whether the database answers and the MQTT link is up and steady (503 when not)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from controller.db import database_reachable
from schemas.api import Health, HealthProblem

router = APIRouter(tags=["health"])


def package_version() -> str:
    try:
        return version("mqtt-fleet")
    except PackageNotFoundError:
        return "0.0.0"


UNHEALTHY: frozenset[HealthProblem] = frozenset({"database", "broker_flapping"})


def _problem(database: bool, mqtt: Any) -> tuple[HealthProblem | None, str | None]:
    if not database:
        return "database", "the database does not answer; check FLEET_DATABASE_URL and the database server"
    if not mqtt.connected:
        return "broker_down", "not connected to the MQTT broker (retrying by itself); check FLEET_MQTT_URL and the broker"
    flapping = mqtt.link_problem
    return ("broker_flapping", flapping) if flapping is not None else (None, None)


@router.get("/healthz", summary="Controller health",
            responses={503: {"model": Health, "description": "unhealthy: the database does not answer, or the broker "
                             "link keeps dropping"}})
def health(request: Request) -> JSONResponse:
    """200 `ok`; 200 `degraded` while the broker is unreachable (the controller keeps retrying
    by itself and its API still serves: tasks wait in SQL); 503 `unhealthy` when the database
    does not answer or the broker link keeps dropping (`reason` says why: usually a client id
    two controllers share). `problem` names which of the three it is."""
    database = database_reachable(request.app.state.engine)
    mqtt = request.app.state.mqtt
    ingest = mqtt.ingest
    problem, reason = _problem(database, mqtt)
    status = "ok" if problem is None else "unhealthy" if problem in UNHEALTHY else "degraded"
    scheduler = getattr(request.app.state, "scheduler", None)
    body = Health(
        status=status,
        problem=problem,
        reason=reason,
        mqtt_client_id=mqtt.client_id,
        mqtt_disconnects_recent=mqtt.recent_disconnects,
        sweeper=bool(scheduler is not None and scheduler.holds_lease),
        database=database,
        mqtt_connected=bool(mqtt.connected),
        version=package_version(),
        invalid_messages=mqtt.invalid_messages,
        throttled_messages=mqtt.throttled_messages,
        ingest_queue=ingest.queue,
        ingest_high_water=ingest.high_water,
        ingest_dropped=ingest.dropped,
        ingest_messages=ingest.messages,
    )
    return JSONResponse(body.model_dump(mode="json"), status_code=503 if status == "unhealthy" else 200)
