"""One webhook request: the alert's JSON body, signed (schemas/alerts.py), POSTed with an async
httpx client whose timeout bounds it. Any 2xx answer is a delivery; anything else, including a
redirect (not followed), a timeout or a refused connection, is a failed attempt whose error text
never holds the URL (it may carry a token) or the secret."""

from __future__ import annotations

import json
from typing import Any

import httpx
from pydantic import SecretStr

from config.settings_alerts import AlertRule
from controller.alerts.outbox import Outcome
from schemas.alerts import DELIVERY_HEADER, EVENT_HEADER, SIGNATURE_HEADER, signature_header

USER_AGENT = "mqtt-fleet-alerts/1"


def encode(payload: dict[str, Any]) -> bytes:
    """The exact bytes sent (and signed)."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False, sort_keys=True).encode()


def headers_for(delivery_id: str, kind: str, body: bytes, secret: SecretStr | None) -> dict[str, str]:
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT, DELIVERY_HEADER: delivery_id,
               EVENT_HEADER: kind}
    if secret is not None:
        headers[SIGNATURE_HEADER] = signature_header(secret.get_secret_value().encode(), body)
    return headers


def _scrub(text: str, rule: AlertRule) -> str:
    url = str(rule.url)
    text = text.replace(url, "<webhook url>")
    if rule.url.query:
        text = text.replace(rule.url.query, "<query>")
    return text


async def send(client: httpx.AsyncClient, rule: AlertRule, secret: SecretStr | None, delivery_id: str,
               kind: str, payload: dict[str, Any], timeout: float) -> Outcome:
    """POST one delivery; never raises for a network or HTTP problem."""
    body = encode(payload)
    try:
        response = await client.post(str(rule.url), content=body, headers=headers_for(delivery_id, kind, body, secret),
                                     timeout=timeout)
    except httpx.TimeoutException:
        return Outcome(False, None, f"no answer within {timeout:g} s (FLEET_ALERT_TIMEOUT)")
    except httpx.HTTPError as exc:
        return Outcome(False, None, _scrub(f"{type(exc).__name__}: {exc}", rule)[:300])
    if 200 <= response.status_code < 300:
        return Outcome(True, response.status_code)
    if 300 <= response.status_code < 400:
        return Outcome(False, response.status_code, f"HTTP {response.status_code}: redirects are not followed; "
                       "give the final URL")
    return Outcome(False, response.status_code, f"HTTP {response.status_code} {response.reason_phrase}")
