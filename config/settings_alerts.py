"""Settings of alert webhooks (docs/architecture.md#alerts): the rules, and how deliveries are
sent and retried.

Rules are a list, in fleet.toml as `[[alert_rules]]` tables or in FLEET_ALERT_RULES as a JSON
list. Each names a `kind`, the kind's parameters, a webhook `url` and optionally its own
signing `secret` (else FLEET_ALERT_SECRET). A rule that is wrong is refused at start with an
error that names the rule (its number and name) and the field; secrets and URLs (which may
carry a token) are never echoed.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    TypeAdapter,
    ValidationError,
    field_validator,
)
from pydantic_settings import BaseSettings

RULE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
PresenceAlert = Literal["takeover", "duplicate_id", "reconnect_storm"]
FailedStatus = Literal["failed", "timed_out"]
PRESENCE_ALERTS: tuple[PresenceAlert, ...] = ("takeover", "duplicate_id", "reconnect_storm")
FAILED_STATUSES: tuple[FailedStatus, ...] = ("failed", "timed_out")
# Fields of this mixin whose values must never appear in an error message.
ALERT_SECRET_FIELDS = ("alert_rules", "alert_secret")


class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=RULE_NAME_PATTERN, description="unique name of the rule (letters, digits, . _ -)")
    url: AnyHttpUrl = Field(description="the webhook: an http:// or https:// URL the alert is POSTed to")
    secret: SecretStr | None = Field(None, min_length=16, description="HMAC key of this rule's signatures "
                                     "(min 16 characters); default FLEET_ALERT_SECRET")
    max_attempts: int | None = Field(None, ge=1, le=100, description="attempts before giving up; "
                                     "default FLEET_ALERT_MAX_ATTEMPTS")


class DeviceOfflineRule(_Rule):
    """A device offline for longer than `minutes` (fractions allowed): once per offline period."""

    kind: Literal["device_offline"]
    minutes: float = Field(gt=0, le=525_600, description="minutes a device must be offline (fractions allowed)")


class PresenceRule(_Rule):
    """A presence alert the controller raised on a device's birth (`takeover`, `duplicate_id`,
    `reconnect_storm`), at most once per `quiet_minutes` per device and alert."""

    kind: Literal["presence"]
    alerts: list[PresenceAlert] = Field(
        default_factory=lambda: list(PRESENCE_ALERTS), min_length=1)
    quiet_minutes: float = Field(30.0, ge=0, le=525_600, description="minutes after one alert of a device and kind "
                                 "before another of them is sent")


class TaskFailedRule(_Rule):
    """A task that ended failed or timed out, optionally only of some types or platforms."""

    kind: Literal["task_failed"]
    statuses: list[FailedStatus] = Field(default_factory=lambda: list(FAILED_STATUSES), min_length=1)
    types: list[str] = Field(default_factory=list, description="task types; empty: every type")
    platforms: list[str] = Field(default_factory=list, description="platforms (params.platform); empty: every task")
    final_only: bool = Field(True, description="only when no retry follows (false: every failed attempt)")
    lookback_minutes: float = Field(60.0, gt=0, le=525_600, description="tasks that ended longer ago are not "
                                    "looked at (a controller started after an outage reports the last hour only)")


class AccountLoginExpiredRule(_Rule):
    """An account whose login no longer holds (login_status `expired`), once per expiry."""

    kind: Literal["account_login_expired"]
    platforms: list[str] = Field(default_factory=list, description="platforms; empty: every account")


AlertRule = Annotated[
    DeviceOfflineRule | PresenceRule | TaskFailedRule | AccountLoginExpiredRule, Field(discriminator="kind")
]
ALERT_KINDS = ("device_offline", "presence", "task_failed", "account_login_expired")
_RULE: TypeAdapter[Any] = TypeAdapter(AlertRule)


def _field_of(loc: tuple[Any, ...]) -> str:
    """The field a rule's validation error is about (the kind tag pydantic puts first dropped)."""
    parts = [str(part) for part in loc if str(part) not in ALERT_KINDS]
    return ".".join(parts) or "kind"


def parse_rules(value: Any) -> list[Any]:
    """Validate a list of rule tables; a ValueError names the rule (number and name) and field."""
    if isinstance(value, str):
        raise ValueError("give a JSON list of rule objects, e.g. "
                         '[{"name": "offline", "kind": "device_offline", "minutes": 5, "url": "https://…"}]')
    if not isinstance(value, list):
        raise ValueError(f"expected a list of rules, got {type(value).__name__}")
    rules: list[Any] = []
    for number, raw in enumerate(value, 1):
        name = raw.get("name") if isinstance(raw, dict) else None
        label = f"rule {number}" + (f" ({name!r})" if isinstance(name, str) else "")
        if not isinstance(raw, dict):
            raise ValueError(f"{label}: expected a table/object with name, kind, url")
        if raw.get("kind") not in ALERT_KINDS:
            raise ValueError(f"{label}: field 'kind' must be one of {', '.join(ALERT_KINDS)}")
        try:
            rules.append(_RULE.validate_python(raw))
        except ValidationError as exc:
            error = exc.errors()[0]
            raise ValueError(f"{label}: field {_field_of(error['loc'])!r}: {error['msg']}") from None
    names = [rule.name for rule in rules]
    for name in names:
        if names.count(name) > 1:
            raise ValueError(f"rule names must be unique: {name!r} is used {names.count(name)} times")
    return rules


class AlertSettings(BaseSettings):
    """Alert webhooks: rules, signing, delivery and retries."""

    alert_rules: list[AlertRule] = Field(
        default_factory=list, description="alert rules: a list of {name, kind, url, secret?, …} (JSON list in env "
        "vars, [[alert_rules]] tables in fleet.toml); kinds device_offline (minutes), presence (alerts, "
        "quiet_minutes), task_failed (statuses, types, platforms), account_login_expired (platforms)",
    )
    alert_secret: SecretStr | None = Field(
        None, min_length=16, description="HMAC-SHA256 key that signs webhook deliveries (X-Fleet-Signature) of rules "
        "without a secret of their own (min 16 characters); unset: those are sent unsigned",
    )
    alert_interval: float = Field(2.0, gt=0, le=600, description="seconds between two looks for new alerts and due deliveries")
    alert_timeout: float = Field(10.0, gt=0, le=300, description="seconds a webhook may take to answer")
    alert_concurrency: int = Field(8, ge=1, le=256, description="webhook requests in flight at once")
    alert_max_attempts: int = Field(8, ge=1, le=100, description="attempts of one delivery before it is given up (failed)")
    alert_backoff: float = Field(5.0, gt=0, le=3600, description="seconds before the 2nd attempt; doubles with each "
                                 "attempt (with ±25 % jitter), up to FLEET_ALERT_BACKOFF_MAX")
    alert_backoff_max: float = Field(3600.0, gt=0, le=86_400, description="longest wait between two attempts, seconds")

    @field_validator("alert_rules", mode="before")
    @classmethod
    def _rules(cls, value: Any) -> list[Any]:
        return parse_rules(value)
