"""`GET /healthz`: whether the database answers and the MQTT client is connected."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from fastapi import APIRouter, Request

from controller.db import database_reachable
from schemas.api import Health

router = APIRouter(tags=["health"])


def package_version() -> str:
    try:
        return version("mqtt-fleet")
    except PackageNotFoundError:
        return "0.0.0"


@router.get("/healthz", summary="Controller health")
def health(request: Request) -> Health:
    """Always 200 while the process serves requests; `status` is `degraded` when the database
    or the broker is unreachable (the controller keeps retrying the broker by itself), or when
    the broker link keeps dropping (`reason` says why: usually a client id two controllers share)."""
    database = database_reachable(request.app.state.engine)
    mqtt = request.app.state.mqtt
    mqtt_connected = bool(mqtt.connected)
    ingest = mqtt.ingest
    reason = None
    if not database:
        reason = "the database does not answer; check FLEET_DATABASE_URL and the database server"
    elif not mqtt_connected:
        reason = "not connected to the MQTT broker (retrying by itself); check FLEET_MQTT_URL and the broker"
    else:
        reason = mqtt.link_problem
    scheduler = getattr(request.app.state, "scheduler", None)
    return Health(
        status="ok" if reason is None else "degraded",
        reason=reason,
        mqtt_client_id=mqtt.client_id,
        mqtt_disconnects_recent=mqtt.recent_disconnects,
        sweeper=bool(scheduler is not None and scheduler.holds_lease),
        database=database,
        mqtt_connected=mqtt_connected,
        version=package_version(),
        invalid_messages=mqtt.invalid_messages,
        throttled_messages=mqtt.throttled_messages,
        ingest_queue=ingest.queue,
        ingest_high_water=ingest.high_water,
        ingest_dropped=ingest.dropped,
        ingest_messages=ingest.messages,
    )
