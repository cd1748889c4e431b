"""Alert webhooks (docs/architecture.md#alerts): the body a receiver gets, its signature, and
the REST shapes of `/api/v1/alerts`.

A delivery is an HTTP POST of `AlertEvent` as JSON with these headers:

- `X-Fleet-Delivery`: the delivery id; the same on every retry of one alert, so a receiver
  that saw it already can drop the copy;
- `X-Fleet-Event`: the alert's kind;
- `X-Fleet-Signature: t=<unix seconds>,v1=<hex>`: HMAC-SHA256 with the rule's secret over
  `<t>.<raw body>` (as Stripe signs); absent when the rule has no secret. A receiver checks it
  with `verify_signature` (or the README's snippet) and refuses old timestamps (replays).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.common import StrictModel, UtcDatetime

DELIVERY_HEADER = "X-Fleet-Delivery"
EVENT_HEADER = "X-Fleet-Event"
SIGNATURE_HEADER = "X-Fleet-Signature"
SIGNATURE_TOLERANCE = 300  # seconds a receiver should accept a signature's timestamp off its clock

AlertKind = Literal["device_offline", "presence", "task_failed", "account_login_expired", "test"]
DeliveryState = Literal["pending", "delivered", "failed"]


class AlertEvent(StrictModel):
    """The JSON body of a webhook delivery.

    `data` by kind: device_offline {device_id, name, offline_since, reason, minutes};
    presence {device_id, name, alert, detail, at}; task_failed {task_id, device_id, type,
    account, platform, status, attempt, error, finished_at}; account_login_expired {account,
    platform, device_id, task_id, since}; test {}.
    """

    id: str = Field(description="the delivery id (also in X-Fleet-Delivery)")
    rule: str = Field(description="name of the rule that raised it")
    kind: AlertKind
    subject: str = Field(description="what it is about: a device id, task id or account name")
    summary: str = Field(description="one line for a human")
    occurred_at: UtcDatetime = Field(description="when the condition began (e.g. the device went offline)")
    created_at: UtcDatetime = Field(description="when the controller raised the alert")
    data: dict[str, Any] = Field(default_factory=dict)


class AlertDeliveryOut(BaseModel):
    """One alert and where its delivery stands (`GET /api/v1/alerts`); never a secret or URL."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    rule: str
    kind: str
    subject: str
    summary: str
    state: DeliveryState
    attempts: int
    next_attempt_at: UtcDatetime | None = Field(description="when a pending delivery is tried next")
    last_status: int | None = Field(description="HTTP status of the last attempt (None: no answer)")
    last_error: str | None = Field(description="why the last attempt failed, or why it was given up")
    created_at: UtcDatetime
    delivered_at: UtcDatetime | None


class AlertTestRequest(StrictModel):
    rule: str = Field(min_length=1, max_length=64, description="name of a configured rule")


def signature_header(secret: bytes, body: bytes, timestamp: int | None = None) -> str:
    """`t=<unix>,v1=<hex>`: HMAC-SHA256 of `<t>.<body>` with `secret`."""
    stamp = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret, f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={stamp},v1={digest}"


def verify_signature(secret: bytes, body: bytes, header: str, tolerance: float = SIGNATURE_TOLERANCE,
                     now: float | None = None) -> bool:
    """Whether `header` (X-Fleet-Signature) signs `body` with `secret` and its timestamp is within
    `tolerance` seconds of `now`. Compared in constant time."""
    parts = dict(item.split("=", 1) for item in header.split(",") if "=" in item)
    try:
        stamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - stamp) > tolerance:
        return False
    expected = signature_header(secret, body, stamp).split("v1=", 1)[1]
    return hmac.compare_digest(expected, parts.get("v1", ""))
