"""Tables of the fleet itself: devices, their connection history, tasks and task events,
broadcasts, accounts and their session backups, stored files, credentials and tokens, fleet
config, leases and alert deliveries."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Float, ForeignKey, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from controller.models.base import ID_LENGTH, Base
from schemas.common import utcnow


class Device(Base):
    __tablename__ = "devices"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default="offline", index=True)
    session_id: Mapped[str | None] = mapped_column(String(64))
    last_seen: Mapped[datetime | None]
    online_since: Mapped[datetime | None]
    facts: Mapped[dict[str, Any] | None]
    groups: Mapped[list[str]] = mapped_column(default=list)  # membership, set on the controller (migration 0014)
    declared_groups: Mapped[list[str]] = mapped_column(default=list)  # what its birth declared (FLEET_GROUPS)
    config_revision: Mapped[int] = mapped_column(default=0)  # of the desired config last published (0: none)
    config_desired: Mapped[dict[str, Any] | None]  # that DesiredConfig's groups and settings
    config_reported: Mapped[dict[str, Any] | None]  # the device's latest ReportedConfig
    tags: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)  # key=value set by operators (targets)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    presence_alert: Mapped[str | None] = mapped_column(String(400))
    heartbeat_interval: Mapped[int | None]
    silent_after: Mapped[datetime | None] = mapped_column(index=True)  # offline unless heard from by then
    last_heartbeat: Mapped[datetime | None]
    metrics: Mapped[dict[str, Any] | None]  # the latest heartbeat's DeviceMetrics
    # Set by DELETE /api/v1/devices/{id} (migration 0017): hidden from lists, its messages ignored
    # until restored (docs/architecture.md#housekeeping).
    deleted_at: Mapped[datetime | None]

    connections: Mapped[list[DeviceConnection]] = relationship(
        back_populates="device", order_by="DeviceConnection.id", cascade="all, delete-orphan"
    )


class DeviceConnection(Base):
    """One presence change of a device: a birth (`online`) or a last will (`offline`)."""

    __tablename__ = "device_connections"
    # A device's latest row in one index step (alert detection, migration 0012); by max(id) alone
    # PostgreSQL walked the primary key backwards, 7,500 rows per device.
    __table_args__ = (Index("ix_device_connections_device_latest", "device_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"), index=True)
    state: Mapped[str] = mapped_column(String(16))
    session_id: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(default=utcnow)
    reason: Mapped[str | None] = mapped_column(String(200))

    device: Mapped[Device] = relationship(back_populates="connections")


class Task(Base):
    __tablename__ = "tasks"
    __table_args__ = (
        Index("ix_tasks_device_status", "device_id", "status"),
        # GET /api/v1/stats reads a time window from this index alone (migration 0011).
        Index("ix_tasks_stats", "created_at", "status", "type", "device_id", "platform", "account", "started_at",
              "finished_at"),
        # The sweep's "queued tasks whose run_at came" (migration 0016): only queued rows are read.
        Index("ix_tasks_due", "status", "run_at"),
    )

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"), index=True)
    type: Mapped[str] = mapped_column(String(64), index=True)
    account: Mapped[str | None] = mapped_column(String(200))
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    platform: Mapped[str | None] = mapped_column(String(64), index=True)  # params["platform"], for statistics
    status: Mapped[str] = mapped_column(String(16), index=True)
    origin: Mapped[str] = mapped_column(String(16))
    broadcast_id: Mapped[str | None] = mapped_column(String(ID_LENGTH), index=True)
    job_id: Mapped[str | None] = mapped_column(String(32), index=True)  # a job's run (migration 0015)
    progress: Mapped[int | None]
    message: Mapped[str | None] = mapped_column(Text)
    result: Mapped[dict[str, Any] | None]
    error: Mapped[dict[str, Any] | None]
    details: Mapped[dict[str, Any] | None]  # the latest structured status (e.g. a QR code to scan)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    dispatched_at: Mapped[datetime | None]
    started_at: Mapped[datetime | None]  # of the current attempt
    finished_at: Mapped[datetime | None] = mapped_column(index=True)  # index: migration 0012 (alerts)
    expires_at: Mapped[datetime | None]
    timeout: Mapped[float | None] = mapped_column(Float)
    dispatch_count: Mapped[int] = mapped_column(default=0)
    last_seq: Mapped[int | None]  # of the current attempt
    attempt: Mapped[int] = mapped_column(default=1)
    max_retries: Mapped[int] = mapped_column(default=0)
    retry_backoff: Mapped[float] = mapped_column(Float, default=5.0)
    retry_at: Mapped[datetime | None] = mapped_column(index=True)
    # Delivery (docs/architecture.md#promise-8-the-promises-hold-at-fleet-size): when the controller
    # last heard of the current attempt (the broker's ack of its publish, or any event of its
    # device), how often it was sent again since the device last had news, and when the next
    # re-send is due (None: `task_resend_after` past `heard_at`).
    heard_at: Mapped[datetime | None]
    resends: Mapped[int] = mapped_column(default=0)
    resend_at: Mapped[datetime | None]
    # sha256 of the create request of a task whose id the client chose, to tell its retry (same
    # body: the same task) from a clash (another body: 409); docs/architecture.md#idempotent-task-creation
    request_sha256: Mapped[str | None] = mapped_column(String(64))
    # Not published before this time (REST `run_at`, or pacing): the task waits `queued` and the
    # sweeping controller publishes it when due (docs/architecture.md#schedules; migration 0016).
    run_at: Mapped[datetime | None]

    events: Mapped[list[TaskEventRecord]] = relationship(
        back_populates="task", order_by="TaskEventRecord.id", cascade="all, delete-orphan"
    )


class TaskEventRecord(Base):
    """One event of a task's timeline, in the order the controller received them."""

    __tablename__ = "task_events"
    __table_args__ = (
        Index("ix_task_events_task_seq", "task_id", "seq"),
        # One row per event whatever the number of controllers recording it (migration 0009).
        Index("uq_task_events_event", "task_id", "attempt", "seq", "event", unique=True),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    task_id: Mapped[str] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"), index=True)
    event: Mapped[str] = mapped_column(String(16))
    attempt: Mapped[int] = mapped_column(default=1)
    seq: Mapped[int]
    at: Mapped[datetime]
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    progress: Mapped[int | None]
    message: Mapped[str | None] = mapped_column(Text)
    result: Mapped[dict[str, Any] | None]
    error: Mapped[dict[str, Any] | None]
    details: Mapped[dict[str, Any] | None]
    replay: Mapped[bool] = mapped_column(default=False)
    applied: Mapped[bool] = mapped_column(default=True)  # False: too late or out of order to change the status

    task: Mapped[Task] = relationship(back_populates="events")


class Broadcast(Base):
    """A task sent to many devices at once; each device's run is a `Task` named `<id>:<device>`."""

    __tablename__ = "broadcasts"

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    type: Mapped[str] = mapped_column(String(64))
    account: Mapped[str | None] = mapped_column(String(200))
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    group: Mapped[str | None] = mapped_column("group_name", String(64))
    include_offline: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None]
    timeout: Mapped[float | None] = mapped_column(Float)
    max_retries: Mapped[int] = mapped_column(default=0)
    retry_backoff: Mapped[float] = mapped_column(Float, default=5.0)


class Account(Base):
    """A social-media account, bound to the device whose browser profile holds its login."""

    __tablename__ = "accounts"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)  # what tasks name in `account`
    platform: Mapped[str] = mapped_column(String(64), index=True)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"), index=True)
    login_status: Mapped[str] = mapped_column(String(16), default="unknown", index=True)
    display_name: Mapped[str | None] = mapped_column(String(200))
    last_login_at: Mapped[datetime | None]
    status_task_id: Mapped[str | None] = mapped_column(String(ID_LENGTH))  # the task that set login_status
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class AccountBackup(Base):
    """An account's browser session, sealed on its device with the operator's vault key and kept
    as a stored file; the controller holds only this metadata and the ciphertext."""

    __tablename__ = "account_backups"

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    account: Mapped[str] = mapped_column(ForeignKey("accounts.name", ondelete="CASCADE"), index=True)
    platform: Mapped[str] = mapped_column(String(64))
    file_id: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    key_fingerprint: Mapped[str] = mapped_column(String(16))
    device_id: Mapped[str] = mapped_column(String(64))  # the device that took it (no FK: it may be deleted)
    task_id: Mapped[str | None] = mapped_column(String(ID_LENGTH))
    taken_at: Mapped[datetime] = mapped_column(default=utcnow)


class StoredFile(Base):
    """A file operators uploaded for devices to fetch (videos, covers), kept on the controller's
    disk (`store` local) or in this database as `FileChunk` rows (`store` database)."""

    __tablename__ = "files"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    content_type: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    store: Mapped[str] = mapped_column(String(16), default="local", server_default="local")


class FileChunk(Base):
    """One piece of a file kept in the database (FLEET_FILE_STORE=database), `seq` from 0, each
    `chunk_bytes` long but the last. Written while the upload streams in, before its `files` row
    exists (so no foreign key); the pieces of an upload that never finished are pruned."""

    __tablename__ = "file_chunks"

    file_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class IdempotencyKey(Base):
    """A create request sent with an `Idempotency-Key`: its body's sha256 and the answer it got,
    committed in the transaction that created its tasks, kept until `expires_at`."""

    __tablename__ = "idempotency_keys"

    endpoint: Mapped[str] = mapped_column(String(64), primary_key=True)  # e.g. "POST /api/v1/tasks"
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    request_sha256: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int]
    response: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(index=True)


class SharedSecret(Base):
    """A secret every controller on this database must agree on, generated once by whichever
    starts first (the key of signed file links when FLEET_FILE_URL_KEY is unset)."""

    __tablename__ = "shared_secrets"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiToken(Base):
    """A REST API token: only the sha256 of its secret part is stored."""

    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    scope: Mapped[str] = mapped_column(String(16))  # read < operate < admin
    secret_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    expires_at: Mapped[datetime | None]


class MqttIdentity(Base):
    """A broker login: a device, the controller or an operator; only its password hash is kept."""

    __tablename__ = "mqtt_identities"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))
    groups: Mapped[list[str]] = mapped_column(default=list)
    password_hash: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None]


class FleetConfigLevel(Base):
    """Desired settings at one level: global (name ''), a group, or a device (migration 0014).
    A device's config merges them: global, then its groups by name, then its own."""

    __tablename__ = "fleet_config"

    scope: Mapped[str] = mapped_column(String(16), primary_key=True)  # global | group | device
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class Lease(Base):
    """A job only one controller may do at a time (the sweeps): who holds it, and until when
    unless renewed (`controller.lease`)."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(200))
    expires_at: Mapped[datetime]


class AlertDelivery(Base):
    """An alert raised by a rule and its webhook delivery (the outbox: docs/architecture.md#alerts).
    One row per (rule, subject, occurrence), whatever the number of controllers that saw the
    condition; the row carries its attempts and when the next is due, so retries outlive a
    restart. The rule's URL and secret are read from settings when sending, never stored."""

    __tablename__ = "alert_deliveries"
    __table_args__ = (
        Index("uq_alert_deliveries_occurrence", "rule", "subject", "occurrence", unique=True),
        Index("ix_alert_deliveries_due", "state", "next_attempt_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # also the X-Fleet-Delivery header
    rule: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(32))
    subject: Mapped[str] = mapped_column(String(200))
    occurrence: Mapped[str] = mapped_column(String(200))  # which time the condition held (e.g. offline period)
    summary: Mapped[str] = mapped_column(String(400))
    payload: Mapped[dict[str, Any]]  # the AlertEvent body
    state: Mapped[str] = mapped_column(String(16), default="pending")  # pending | delivered | failed
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime | None]
    last_status: Mapped[int | None]
    last_error: Mapped[str | None] = mapped_column(String(400))
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    delivered_at: Mapped[datetime | None]
