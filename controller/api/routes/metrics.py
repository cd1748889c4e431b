"""`GET /metrics`: the controller's Prometheus metrics (`controller.metrics`), in the text
exposition format. A read-scope API token is needed unless FLEET_METRICS_PUBLIC is true."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from controller.api.security import Read


def metrics_router(public: bool) -> APIRouter:
    router = APIRouter(tags=["health"], dependencies=[] if public else [Read])

    @router.get("/metrics", summary="Prometheus metrics", response_class=Response,
                responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "text exposition format"}})
    def metrics(request: Request) -> Response:
        """Devices by presence, tasks by status and type, task run times, the MQTT link and the
        ingest path of this controller. See the README's "Statistics and metrics"."""
        return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return router
