"""The REST side of idempotent creates (docs/architecture.md#idempotent-task-creation): the
`Idempotency-Key` header every create route takes, and the answer it sends back."""

from __future__ import annotations

from typing import Annotated

from fastapi import Header, Request
from fastapi.responses import JSONResponse

from controller.services.idempotency import Answer, Pruner
from schemas.api import IDEMPOTENCY_KEY_HEADER, IDEMPOTENCY_KEY_PATTERN, IDEMPOTENT_REPLAYED_HEADER

IdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        alias=IDEMPOTENCY_KEY_HEADER,
        pattern=IDEMPOTENCY_KEY_PATTERN,
        description="a key of your choosing, new for each new request (a UUID): sending the same request again "
        "with it creates nothing new and answers the first answer again, with 'Idempotent-Replayed: true'; "
        "the same key with another body is a 422. Remembered for FLEET_IDEMPOTENCY_KEY_TTL seconds (a day)",
    ),
]

REPLAY_HEADERS = {IDEMPOTENT_REPLAYED_HEADER: "true"}


def respond(answer: Answer) -> JSONResponse:
    """The answer as sent: its status and body, marked when it replays an earlier one."""
    return JSONResponse(answer.body, status_code=answer.status_code, headers=REPLAY_HEADERS if answer.replayed else None)


def ttl(request: Request) -> float:
    return float(request.app.state.settings.idempotency_key_ttl)


def prune_if_due(request: Request) -> None:
    """Prune expired keys (and unfinished uploads' pieces) when it is time; see `Pruner`."""
    pruner: Pruner = request.app.state.pruner
    pruner.run_if_due(request.app.state.sessions)
