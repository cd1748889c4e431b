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
    or the broker is unreachable (the controller keeps retrying the broker by itself)."""
    database = database_reachable(request.app.state.engine)
    mqtt = request.app.state.mqtt
    mqtt_connected = bool(mqtt.connected)
    ingest = mqtt.ingest
    return Health(
        status="ok" if database and mqtt_connected else "degraded",
        database=database,
        mqtt_connected=mqtt_connected,
        version=package_version(),
        invalid_messages=mqtt.invalid_messages,
        throttled_messages=mqtt.throttled_messages,
        ingest_queue=ingest.queue,
        ingest_high_water=ingest.high_water,
        ingest_dropped=ingest.dropped,
    )
