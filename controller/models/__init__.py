"""SQLAlchemy tables of the controller. SQL is the source of truth for every task
(docs/architecture.md#promise-1-sql-is-the-source-of-truth). Importing this package registers
every table on `Base.metadata` (migrations and their tests compare against it)."""

from controller.models.automation import Job, JobTarget, PacingRule, PacingSlot, Release, Schedule
from controller.models.base import ID_LENGTH, Base, UtcDateTime
from controller.models.fleet import (
    Account,
    AccountBackup,
    AlertDelivery,
    ApiToken,
    Broadcast,
    Device,
    DeviceConnection,
    FileChunk,
    FleetConfigLevel,
    IdempotencyKey,
    Lease,
    MqttIdentity,
    SharedSecret,
    StoredFile,
    Task,
    TaskEventRecord,
)

__all__ = ["Account", "AccountBackup", "AlertDelivery", "ApiToken", "Base", "Broadcast", "Device", "DeviceConnection", "FileChunk", "FleetConfigLevel", "ID_LENGTH", "IdempotencyKey", "Job", "JobTarget", "Lease", "MqttIdentity", "PacingRule", "PacingSlot", "Release", "Schedule", "SharedSecret", "StoredFile", "Task", "TaskEventRecord", "UtcDateTime"]
