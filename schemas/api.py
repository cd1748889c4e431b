"""REST request and response bodies of the controller's `/api/v1`."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, AliasChoices, BaseModel, ConfigDict, Field, model_validator

from schemas.common import DeviceId, GroupName, StrictModel, TaskId, TaskType, UtcDatetime
from schemas.events import MAX_ATTEMPTS, EventKind, TaskError, TaskStatus
from schemas.housekeeping import Placement
from schemas.status import DeviceFacts, DeviceMetrics
from schemas.tasks import TaskEnvelope
from schemas.topics import BROADCAST_TASKS, device_tasks, group_tasks


class TaskOptions(StrictModel):
    account: str | None = Field(None, min_length=1, max_length=200, description="account the task acts for")
    params: dict[str, Any] = Field(default_factory=dict, description="parameters of the task type")
    run_at: UtcDatetime | None = Field(
        None, validation_alias=AliasChoices("run_at", "not_before"),
        description="record the task now but publish it only from this time on (it waits `queued`); a time in the "
        "past means now. Pacing rules may move it later; the answer shows the run_at given",
    )
    expires_at: UtcDatetime | None = Field(None, description="never start the task after this time")
    ttl: float | None = Field(
        None, gt=0, le=30 * 86_400, description="seconds from run_at (from now without one); sets expires_at"
    )
    timeout: float | None = Field(None, gt=0, le=86_400, description="seconds the handler may run")
    retries: int = Field(
        0, ge=0, le=MAX_ATTEMPTS - 1, description="times a failed or timed-out task is run again (never a rejected one)"
    )
    retry_backoff: float = Field(
        5.0, ge=0, le=3600, description="seconds before the first retry; doubled for each further one (at most 1 h)"
    )

    @model_validator(mode="after")
    def _one_expiry(self) -> "TaskOptions":
        if self.ttl is not None and self.expires_at is not None:
            raise ValueError("give either ttl or expires_at, not both")
        return self


# Idempotent creates (docs/architecture.md#idempotent-task-creation): a POST that creates tasks
# may carry this header; the same key with the same body answers the first response again.
IDEMPOTENCY_KEY_HEADER = "Idempotency-Key"
IDEMPOTENT_REPLAYED_HEADER = "Idempotent-Replayed"  # "true" on an answer that created nothing new
IDEMPOTENCY_KEY_PATTERN = r"^[\x21-\x7e]{1,255}$"  # printable ASCII, no spaces (a UUID is the usual choice)


class TaskCreate(TaskOptions):
    id: TaskId | None = Field(
        None, description="an id of your choosing (letters, digits, '.', '_', '-', ':'); sending the same id with "
        "the same body again answers the same task, with another body a 409. Random when absent",
    )
    device_id: DeviceId | None = Field(None, description="target device; may be left out when `account` is bound to "
                                       "one, or with `placement`")
    type: TaskType
    placement: Placement | None = Field(None, description="instead of device_id: run it on ONE online device of "
                                        "`placement.target`, chosen by load (and by the accounts it holds)")

    @model_validator(mode="after")
    def _target(self) -> "TaskCreate":
        if self.placement is not None and self.device_id is not None:
            raise ValueError("give either device_id or placement (the controller picks a device of its target), not both")
        if self.device_id is None and self.account is None and self.placement is None:
            raise ValueError("give a device_id, an account that is bound to a device, or a placement "
                             '({"target": {"groups": ["office"]}}) to let the controller pick an online device')
        return self


TASK_BATCH_LIMIT = 1000  # tasks in one `POST /api/v1/tasks/batch`


class TaskBatchCreate(StrictModel):
    """Many tasks in one request: all are created in one transaction, or none is."""

    tasks: list[TaskCreate] = Field(
        min_length=1, max_length=TASK_BATCH_LIMIT, description=f"1 to {TASK_BATCH_LIMIT} tasks, each as for POST /api/v1/tasks"
    )


class BroadcastCreate(TaskOptions):
    type: TaskType
    group: GroupName | None = Field(None, description="only devices in this group; all devices when absent")
    include_offline: bool = Field(
        False, description="also queue the task for offline devices; they run it when they come back"
    )


class TaskEventOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    event: EventKind
    attempt: int
    seq: int
    at: UtcDatetime
    received_at: UtcDatetime
    applied: bool = Field(description="false when the event came too late or out of order to change the status")
    progress: int | None = None
    message: str | None = None
    result: dict[str, Any] | None = None
    error: TaskError | None = None
    details: dict[str, Any] | None = None
    replay: bool = False


class TaskOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: TaskId
    device_id: str
    type: str
    account: str | None
    params: dict[str, Any]
    status: TaskStatus
    origin: Literal["api", "adhoc", "broadcast", "job"]
    broadcast_id: str | None
    job_id: str | None = Field(None, description="the job this task is a run of")
    progress: int | None
    message: str | None
    result: dict[str, Any] | None
    error: TaskError | None
    details: dict[str, Any] | None = Field(description="the latest structured status, e.g. a QR code to scan")
    created_at: UtcDatetime
    updated_at: UtcDatetime
    dispatched_at: UtcDatetime | None
    started_at: UtcDatetime | None
    finished_at: UtcDatetime | None
    expires_at: UtcDatetime | None
    timeout: float | None
    dispatch_count: int
    attempt: int
    max_retries: int
    retry_backoff: float
    retry_at: UtcDatetime | None = Field(description="when the next attempt is queued, while a retry is pending")
    run_at: UtcDatetime | None = Field(
        None, description="not published before this time (the requested run_at, or the one pacing gave it)"
    )


class TaskDetail(TaskOut):
    events: list[TaskEventOut]


class TaskPage(BaseModel):
    items: list[TaskOut]
    total: int
    limit: int
    offset: int


class TaskBatchOut(BaseModel):
    items: list[TaskOut] = Field(description="the created tasks, in the order they were given")


class TaskInput(StrictModel):
    """A value a running task waits for, e.g. the SMS code of a login."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_]*$", examples=["code"])
    value: str = Field(max_length=4000, description="never logged")


class BroadcastOut(BaseModel):
    id: TaskId
    type: str
    group: str | None
    created_at: UtcDatetime
    task_ids: list[TaskId] = Field(description="per-device runs, named '<broadcast id>:<device id>'")
    status_counts: dict[str, int]


class DeviceOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: DeviceId
    name: str | None
    status: Literal["online", "offline"]
    session_id: str | None
    last_seen: UtcDatetime | None
    online_since: UtcDatetime | None
    facts: DeviceFacts | None
    groups: list[str] = Field(description="membership, set on the controller (PUT /api/v1/devices/{id}/groups)")
    declared_groups: list[str] = Field(default_factory=list, description="what its birth declared; members only if "
                                       "accepted (FLEET_ACCEPT_DECLARED_GROUPS) or set")
    heartbeat_interval: int | None = Field(None, description="seconds between its heartbeats, as last told or applied")
    tags: dict[str, str] = Field(default_factory=dict, description="key=value labels operators set (targets)")
    presence_alert: str | None = Field(
        None, description="set while the device flaps: a reconnect storm, or two daemons sharing its id"
    )
    last_heartbeat: UtcDatetime | None = None
    metrics: DeviceMetrics | None = Field(None, description="the PC's load, from the latest heartbeat")
    deleted_at: UtcDatetime | None = Field(None, description="when it was deleted (hidden from lists, its messages "
                                           "ignored until restored)")


class DevicePage(BaseModel):
    items: list[DeviceOut]
    total: int
    limit: int
    offset: int


class ConnectionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    state: Literal["online", "offline"]
    session_id: str
    at: UtcDatetime
    reason: str | None


HealthProblem = Literal["database", "broker_down", "broker_flapping"]


class Health(BaseModel):
    status: Literal["ok", "degraded", "unhealthy"] = Field(description=(
        "ok; degraded (HTTP 200): not connected to the broker right now, retrying by itself, the API still serves; "
        "unhealthy (HTTP 503): the database does not answer, or the broker link keeps dropping"))
    problem: HealthProblem | None = Field(None, description="what is wrong, when something is: database, "
                                          "broker_down or broker_flapping (`reason` says how to fix it)")
    database: bool
    mqtt_connected: bool
    version: str
    invalid_messages: int = Field(0, description="messages from devices dropped since start because they could not be read")
    throttled_messages: int = Field(0, description="messages from devices dropped since start because their device "
                                    "sent more than FLEET_DEVICE_MESSAGE_RATE or FLEET_DEVICE_STATUS_RATE allow")
    ingest_queue: int = Field(0, description="device messages read from the broker and waiting to be recorded")
    ingest_high_water: int = Field(0, description="the longest the ingest queue has been since start")
    ingest_dropped: int = Field(0, description="device messages dropped because the ingest queue was full (always 0: "
                                "it is unbounded, and a warning is logged when it grows long)")
    ingest_messages: int = Field(0, description="device messages (and broker acks) this controller recorded since start")
    reason: str | None = Field(None, description="why the status is degraded, when it is")
    mqtt_client_id: str | None = Field(None, description="the MQTT client id this controller connects with")
    mqtt_disconnects_recent: int = Field(0, description="disconnects from the broker within the last minute")
    sweeper: bool = Field(False, description="whether this controller holds the sweep lease (runs expiries, "
                          "timeouts, retries and re-sends for every controller on this database)")


class ErrorBody(BaseModel):
    detail: str


LoginStatus = Literal["unknown", "logged_in", "logged_out", "expired"]


ACCOUNT_NAME_RULE = (
    "an account name may hold letters, digits, spaces and any punctuation except '/' (it could never be "
    "read or deleted under /api/v1/accounts/{name}), no control characters, and may not be '.' or '..'"
)


def _account_name(value: str) -> str:
    if "/" in value or value in (".", "..") or any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError(f"{value!r} is not allowed: {ACCOUNT_NAME_RULE}")
    return value


AccountName = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_account_name)]


class AccountCreate(StrictModel):
    name: AccountName = Field(description="the name tasks use in `account`; any text without '/' or control characters")
    platform: str = Field(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_.-]*$")
    device_id: DeviceId = Field(description="the device whose browser profile holds this account's login")


class AccountUpdate(StrictModel):
    device_id: DeviceId | None = Field(None, description="move the account to another device; its latest session backup is restored there "
                                       "(POST /api/v1/accounts/{name}/move also takes a fresh one first)")
    platform: str | None = Field(None, min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_.-]*$")


class AccountOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    name: str
    platform: str
    device_id: str
    login_status: LoginStatus
    display_name: str | None
    last_login_at: UtcDatetime | None
    status_task_id: str | None
    created_at: UtcDatetime
    updated_at: UtcDatetime


class FileOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    size: int
    sha256: str
    content_type: str
    created_at: UtcDatetime
    url: str = Field(description="where devices download it (HTTP range requests resume a broken download)")


Scope = Literal["read", "operate", "admin"]


DURATION_PATTERN = r"^[1-9][0-9]{0,5}[smhdw]$"
DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


def parse_duration(text: str) -> timedelta:
    """`30d`, `12h`, `90m`, `3600s`, `2w` as a timedelta; ValueError with what is accepted."""
    if re.fullmatch(DURATION_PATTERN, text) is None:
        raise ValueError(f"{text!r} is not a duration: write a number and a unit s, m, h, d or w, e.g. 30d or 12h")
    return timedelta(seconds=int(text[:-1]) * DURATION_UNITS[text[-1]])


class TokenCreate(StrictModel):
    name: str = Field(min_length=1, max_length=200, description="who or what uses it, e.g. 'ops dashboard'")
    scope: Scope = Field(description="read: GET only; operate: also tasks, broadcasts, accounts, files; admin: also tokens")
    expires: str | None = Field(
        None, pattern=DURATION_PATTERN, examples=["30d"],
        description="lifetime from now: a number and a unit s, m, h, d or w (e.g. 30d); omitted: never expires",
    )


class TokenOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    scope: Scope
    created_at: UtcDatetime
    last_used_at: UtcDatetime | None
    revoked_at: UtcDatetime | None
    expires_at: UtcDatetime | None = None


class TokenCreated(TokenOut):
    token: str = Field(description="the secret: shown once, send it as 'Authorization: Bearer <token>'")


MqttRole = Literal["device", "controller", "operator"]


class IdentityCreate(StrictModel):
    name: DeviceId = Field(description="the MQTT user name; for a device, its device id")
    role: MqttRole = "device"
    groups: list[GroupName] = Field(default_factory=list, description="a device's groups: it may read their task topics")


class IdentityOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    name: str
    role: MqttRole
    groups: list[str]
    created_at: UtcDatetime
    revoked_at: UtcDatetime | None


class IdentityCreated(IdentityOut):
    secret: str = Field(description="the MQTT password: shown once, e.g. FLEET_MQTT_URL=mqtt://<name>:<secret>@host")
    broker_files: str = Field(description="'written and reloaded', or what to configure on a broker the controller does not manage")


class BrokerFiles(BaseModel):
    password_file: str = Field(description="Mosquitto password file (mosquitto_passwd format)")
    acl_file: str = Field(description="Mosquitto ACL file")
    nats_auth_file: str = Field(description="NATS authorization file (bcrypt hashes, subject permissions) to include "
                                "in a nats-server config; identities it cannot hold are named in `nats_left_out`")
    nats_left_out: list[str] = Field(description="identities missing from the NATS file, each with the reason")


class SignatureRequest(StrictModel):
    """`POST /api/v1/signatures`: a hand-written task to sign for one device, one group or the
    broadcast topic (exactly one); the signature is valid on that topic only."""

    task: TaskEnvelope
    device_id: DeviceId | None = Field(None, description="sign it for devices/<device_id>/tasks")
    group: GroupName | None = Field(None, description="sign it for fleet/groups/<group>/tasks")
    broadcast: bool = Field(False, description="sign it for fleet/broadcast/tasks")

    @model_validator(mode="after")
    def _one_target(self) -> "SignatureRequest":
        if sum([self.device_id is not None, self.group is not None, self.broadcast]) != 1:
            raise ValueError("give exactly one of device_id, group or broadcast: true")
        return self

    @property
    def topic(self) -> str:
        if self.device_id is not None:
            return device_tasks(self.device_id)
        return group_tasks(self.group) if self.group is not None else BROADCAST_TASKS


class SigningKeyOut(BaseModel):
    key_id: str = Field(description="the id tasks carry as key_id")
    public_key: str = Field(description="base64; list it in the devices' FLEET_TASK_SIGNING_PUBLIC_KEYS")
