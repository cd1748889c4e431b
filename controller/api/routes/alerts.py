"""`/api/v1/alerts`: alerts raised by the configured rules and their webhook deliveries
(docs/architecture.md#alerts); a test delivery through a rule's webhook (admin)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from controller.alerts import outbox
from controller.api.deps import ReadSessionDep, SessionDep
from controller.api.security import Admin, Read
from controller.lease import database_now
from schemas.alerts import AlertDeliveryOut, AlertKind, AlertTestRequest, DeliveryState
from schemas.api import ErrorBody

router = APIRouter(prefix="/alerts", tags=["alerts"])


@router.get("", dependencies=[Read], summary="List recent alerts and their delivery state")
def list_alerts(
    session: ReadSessionDep,
    state: DeliveryState | None = None,
    rule: Annotated[str | None, Query(max_length=64)] = None,
    kind: AlertKind | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[AlertDeliveryOut]:
    """Newest first: pending (with the next attempt's time), delivered or failed (with why).
    Never a webhook URL or secret."""
    rows = outbox.list_deliveries(session, state=state, rule=rule, kind=kind, limit=limit)
    return [AlertDeliveryOut.model_validate(row) for row in rows]


@router.post("/test", dependencies=[Admin], status_code=202, summary="Send a test alert through a rule's webhook",
             responses={404: {"model": ErrorBody, "description": "no rule of that name"}})
def test_alert(request: Request, session: SessionDep, body: AlertTestRequest) -> AlertDeliveryOut:
    """Queues a `test` alert for the rule's URL; the controller running the alert loop sends it
    within FLEET_ALERT_INTERVAL seconds, signed and retried like any other (see GET /api/v1/alerts)."""
    row = outbox.create_test(session, request.app.state.settings.alert_rules, body.rule, database_now(session))
    return AlertDeliveryOut.model_validate(row)
